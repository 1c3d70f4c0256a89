"""
Does a chain's model answer a sum asked in words it never trained on? (issue 37)
Greedy held-out accuracy (operand pairs no training split holds) of each run directory, the same 200 pairs asked
three ways: the one wording the chains trained on before ("What is 12 plus 34?"), the other training wordings of
builtin_data.PHRASINGS, and its held-out wordings, which no `-phrased` training source ever shows.

    python bench/phrasings.py --runs checkpoints/reasoning/seed_1/sft_think checkpoints/reasoning/seed_1/sft_think_phrased
    python bench/phrasings.py --runs RUN --way tool     # the calculator offered, calls run inside the loop
    python bench/phrasings.py --runs RUN --way restate  # SFT on arithmetic-restate-phrased (200 new tokens)
    python bench/phrasings.py --chain --seeds 1 2 3     # train the restate chain per seed, then the table (make reasoning-restate)
"""
import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import torch  # noqa: E402

import builtin_data  # noqa: E402
from data import _with_tools  # noqa: E402
from generate import GenerationConfig, load_generator  # noqa: E402
from reasoning_chains import run_stage  # noqa: E402
from tools import CALCULATOR_TOOL, final_answer  # noqa: E402
from train_utils import cli  # noqa: E402

SETS = {"first wording": None, "other training wordings": "train", "held-out wordings": "heldout"}


def chain(out, seed, timings):
    """The chain that reads held-out wordings (--chain): pretraining on the built-in text (split digits, the cosine cut
    halfway: train_pretrain.py's default), then SFT on the trace that first copies the operands
    (arithmetic-restate-phrased: the columns read the digits from that line, whatever the wording). Returns the SFT
    run directory."""
    pre, sft = os.path.join(out, f"seed_{seed}", "pretrain"), os.path.join(out, f"seed_{seed}", "sft_restate")
    run_stage(f"{seed}/pretrain", pre, ["train_pretrain.py", "--config", "tiny", "--tokenizer-digits", "split",
                                        "--seed", str(seed), "--out-dir", pre], timings)
    run_stage(f"{seed}/sft_restate", sft, ["train_sft.py", "--config", "tiny", "--max-steps", "1500", "--lr", "1e-3",
                                           "--eval-interval", "500", "--init-from", pre, "--data",
                                           "arithmetic-restate-phrased", "--seed", str(seed), "--out-dir", sft], timings)
    return sft


def questions(phrasing, n, way):
    """[(messages, answer)]: held-out operand pairs asked with the set's wordings (the first wording: the old one)."""
    if phrasing == "train":  # the other training wordings: leave out the first, which the first set asks with
        items = [it for it in builtin_data.arithmetic_items("heldout", 3 * n, phrasing="train")
                 if it["prompt"] != builtin_data.PHRASINGS[it["lang"], it["op"]][0].format(a=it["a"], b=it["b"])][:n]
    else:
        items = builtin_data.arithmetic_items("heldout", n, phrasing=phrasing)
    tools = {"tools": [CALCULATOR_TOOL]} if way == "tool" else {}  # in the system turn, as the tool chain trains
    return [(_with_tools([{"role": "user", "content": it["prompt"]}], tools), it["answer"]) for it in items]


def accuracy(generator, asked, way, max_new_tokens, batch=100):
    tok, right = generator.tokenizer, 0
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, greedy=True)
    for start in range(0, len(asked), batch):
        part = asked[start:start + batch]
        ids = [tok.apply_chat_template(m, add_generation_prompt=True)[0] for m, _ in part]
        with torch.no_grad():
            rows = generator.generate_with_tools(ids, cfg)[0] if way == "tool" else generator.generate_ids(ids, cfg)
        right += sum(builtin_data.check_answer_strictly(final_answer(tok.decode(r)), answer)
                     for r, (_, answer) in zip(rows, part))
    return right / len(asked)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--runs", nargs="+", default=[])
    p.add_argument("--way", default="think", choices=["direct", "think", "restate", "tool"])
    p.add_argument("--chain", action="store_true", help="train the restate chain for each --seeds into --out (a "
                   "finished stage is reused), then measure its SFT runs (--way restate)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--out", default="checkpoints/restate")
    p.add_argument("--n", type=int, default=200, help="held-out operand pairs per set")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 24 direct, 160 think, 200 restate "
                   "(the restating line: a subtraction with two borrows runs past 160), 96 tool")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    timings = {}
    if args.chain:
        args.way, args.runs = "restate", [chain(args.out, seed, timings) for seed in args.seeds]
        args.json = args.json or os.path.join(args.out, "results.json")
    if not args.runs:
        p.error("--runs RUN [RUN ...] or --chain")
    max_new = args.max_new_tokens or {"direct": 24, "think": 160, "restate": 200, "tool": 96}[args.way]
    print(f"{'run':<48}" + "".join(f"{name:>26}" for name in SETS))
    results = {}
    for run in args.runs:
        generator = load_generator(run)
        scores = {name: accuracy(generator, questions(phrasing, args.n, args.way), args.way, max_new)
                  for name, phrasing in SETS.items()}
        results[run] = scores
        print(f"{run[-48:]:<48}" + "".join(f"{v:>26.3f}" for v in scores.values()), flush=True)
    if len(args.runs) > 1:  # mean +- std [lowest, highest] over the runs (the seeds of --chain)
        cells = [[results[run][name] for run in args.runs] for name in SETS]
        print(f"{'mean +- std [lowest, highest]':<48}" + "".join(
            f"  {statistics.mean(c):.3f} +- {statistics.stdev(c):.3f} [{min(c):.3f}, {max(c):.3f}]" for c in cells))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"runs": results, "seconds": timings, "max_new_tokens": max_new}, f, indent=1)


if __name__ == "__main__":
    cli(main)
