"""
Does a tool-using model read the tool list, or did it learn one system prompt? (issue 37)
The chain: train_pretrain.py --tokenizer-digits split --seq-len 512 --data builtin builtin-made-up (room for 4 tools
and two exchanges), 1500 more pretraining steps on builtin-made-up alone (a copying course), then train_sft.py --data
tool-use (builtin_data.tool_use_items: tools defined many ways, 0-3 distractors in random order, questions for other
tools, for no tool, for a tool not offered). Measured greedily, on operand pairs, argument values
and facts questions no training split holds, two ways:
  in-template   tool names, descriptions, parameter names and question wordings that training used
  held-out      names, descriptions, parameter names and wordings it never saw (and distractor tools it was never offered)
and four cases, each with 1-3 distractor tools in the list:
  calculator    a sum or difference: the final answer right (the call runs against the offered tool's definition)
  other tool    a question for another offered tool (weather, time, translate, email, timer): the first call names that
                tool with exactly the right arguments
  no tool       a question about the built-in world's facts: no call made
  not offered   a question for a tool that is not in the list: no call made
each decoded freely and with the call's name and argument names kept to the offered ones (tools.CallConstraint, what
a guided-decoding server such as vLLM does; the values stay the model's).

    python bench/tool_use.py --seeds 1 2 3                   # the chains and the table (make tool-use SEEDS="1 2 3")
    python bench/tool_use.py --runs RUN [RUN ...]            # the table for run directories trained on tool-use
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import torch  # noqa: E402

import builtin_data  # noqa: E402
from generate import GenerationConfig, load_generator  # noqa: E402
from reasoning_chains import run_stage  # noqa: E402
from tools import CallConstraint, final_answer  # noqa: E402
from train_utils import cli  # noqa: E402

SETS = {"in-template": "train", "held-out": "heldout"}  # -> the `definitions` of tool_use_items
CASES = {"calculator": "calculator", "other tool": "other", "no tool": "none", "not offered": "not_offered"}
TARGETS = {"calculator": 0.95, "other tool": 0.95, "no tool": 0.9, "not offered": 0.9}  # issue 37, on held-out
# 512 x 16: the tokens of a 256 x 32 step, with room for 4 tools and two exchanges
# (the whole cosine, as the figures in BENCHMARKS.md were measured; train_pretrain.py now cuts it halfway)
PRETRAIN = ["--config", "tiny", "--tokenizer-digits", "split", "--seq-len", "512", "--batch-size", "16",
            "--data", "builtin", "builtin-made-up", "--lr-decay-steps", "600"]
# then a copying course: made-up names said twice, alone, until the model copies a name it never saw (in 600 mixed
# steps it did not; here the loss falls 1.04 -> 0.13 with a jump between steps 700 and 1000, BENCHMARKS.md)
COPY = ["--config", "tiny", "--seq-len", "512", "--batch-size", "16", "--data", "builtin-made-up", "--max-steps", "1500"]
SFT = ["--config", "tiny", "--data", "tool-use", "--seq-len", "512", "--max-steps", "1500", "--lr", "1e-3",
       "--eval-interval", "500"]


def commands(out, seed):
    """[(stage, run dir, argv)] of one seed's chain."""
    pre, copy, sft = (os.path.join(out, f"seed_{seed}", name) for name in ("pretrain", "copy", "sft_tool_use"))
    return [("pretrain", pre, ["train_pretrain.py", *PRETRAIN, "--seed", str(seed), "--out-dir", pre]),
            ("copy", copy, ["train_pretrain.py", *COPY, "--init-from", pre, "--seed", str(seed), "--out-dir", copy]),
            ("sft", sft, ["train_sft.py", *SFT, "--init-from", copy, "--seed", str(seed), "--out-dir", sft])]


def run_chain(out, seed):
    """Run the stages not done before; {"seed/stage": seconds} of those run."""
    timings = {}
    for stage, run_dir, argv in commands(out, seed):
        run_stage(f"{seed}/{stage}", run_dir, argv, timings)
    return timings


def score(item, text, calls):
    """1.0 if the model did what the case asks (see the module's docstring), else 0.0."""
    made = [c for c, _, _ in calls]
    if item["case"] == "calculator":
        return builtin_data.check_answer_strictly(final_answer(text), item["answer"])
    if item["case"] == "other":
        if not made or made[0]["name"] != item["call"]["name"]:
            return 0.0
        try:
            arguments = json.loads(made[0]["arguments"])
        except (json.JSONDecodeError, TypeError):
            return 0.0
        as_text = lambda d: {k: str(v) for k, v in d.items()} if isinstance(d, dict) else d  # noqa: E731 (6 or "6")
        return float(as_text(arguments) == as_text(item["call"]["arguments"]))
    return float(not made)  # no tool, not offered


def right_tool(item, calls):
    """1.0 if the first call names the tool the item needs (whatever its arguments), else 0.0."""
    return float(bool(calls) and item["call"] is not None and calls[0][0]["name"] == item["call"]["name"])


def evaluate(generator, items, max_new_tokens=128, batch=50, tool_share=None, constrained=False):
    """The share of items the model handles right, greedy, tool calls run against each item's offered tools.
    tool_share: a list to which the share of first calls that name the right tool is appended. constrained: a call's
    name and argument names are kept to the offered tools' (tools.CallConstraint), as a guided-decoding server does."""
    tok, total, named = generator.tokenizer, 0.0, 0.0
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, greedy=True)
    for start in range(0, len(items), batch):
        part = items[start:start + batch]
        ids = [tok.apply_chat_template(it["messages"], add_generation_prompt=True)[0] for it in part]
        run_call = lambda row, call: builtin_data.run_offered_call(part[row]["offered"], call)  # noqa: E731
        constraints = [CallConstraint(tok, it["tools"]) for it in part] if constrained else None
        with torch.no_grad():
            rows, _, calls = generator.generate_with_tools(ids, cfg, max_tool_calls=2, run_call=run_call,
                                                           constraints=constraints)
        total += sum(score(it, tok.decode(r), c) for it, r, c in zip(part, rows, calls))
        named += sum(right_tool(it, c) for it, c in zip(part, calls))
    if tool_share is not None:
        tool_share.append(named / len(items))
    return total / len(items)


def table(generator, n):
    """{column: {case: accuracy}} on n items per cell, 1-3 distractors in every list, for each set decoded freely and
    with the call's names constrained; for the two cases that need a tool, also the share whose first call names the
    right tool ('... : right tool')."""
    results = {}
    for name, definitions in SETS.items():
        for constrained in (False, True):
            column = name + (", constrained" if constrained else "")
            results[column] = {}
            for case, key in CASES.items():
                items = builtin_data.tool_use_items("heldout", n, definitions=definitions, cases=key, distractors=(1, 3))
                share = []
                results[column][case] = evaluate(generator, items, tool_share=share, constrained=constrained)
                if key in ("calculator", "other"):
                    results[column][f"{case}: right tool"] = share[0]
    return results


def summary(values):
    spread = f" +- {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{spread} [{min(values):.3f}, {max(values):.3f}]"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--runs", nargs="+", default=None, help="evaluate these run directories instead of running chains")
    p.add_argument("--out", default=os.path.join(ROOT, "checkpoints", "tool_use"))
    p.add_argument("--n", type=int, default=100, help="items per cell (case x set)")
    p.add_argument("--json", default=None, help="default: OUT/results.json")
    args = p.parse_args(argv)
    runs, timings = args.runs, {}
    if runs is None:
        runs = []
        for seed in args.seeds:
            timings[seed] = run_chain(args.out, seed)
            runs.append(commands(args.out, seed)[-1][1])
    results = {}
    for run in runs:
        started = time.time()
        generator = load_generator(run)
        if generator.model.config.max_seq_len < 512:
            raise SystemExit(f"{run}: max_seq_len {generator.model.config.max_seq_len} is too short for the tool lists "
                             f"(a prompt with 4 tools takes up to ~350 tokens): pretrain with --seq-len 512, as this chain does")
        results[run] = table(generator, args.n)
        print(f"{run}: evaluated in {time.time() - started:.0f} s", flush=True)
    columns = list(results[runs[0]])
    print(f"\n{'case':<24}" + "".join(f"{name:>34}" for name in columns) + f"{'target (held-out)':>20}")
    for case in results[runs[0]]["held-out"]:
        cells = [summary([results[r][name][case] for r in runs]) for name in columns]
        print(f"{case:<24}" + "".join(f"{c:>34}" for c in cells) + f"{TARGETS.get(case, ''):>20}")
    path = args.json or os.path.join(args.out, "results.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"runs": results, "timings_s": timings, "machine": platform.processor() or platform.machine(),
                   "n": args.n}, f, indent=1)
    print(f"results: {path}")


if __name__ == "__main__":
    cli(main)
