"""
Three ways to answer 3-digit sums and differences (issue 30), side by side on the same preset and budget:
  direct  SFT on the answer alone, then GRPO                           (today's way)
  think   SFT on worked steps inside <think>...</think>, then GRPO      (reasoning)
  tool    SFT on a calculator call and its result, then GRPO with the calculator in the rollouts (tools)
  2to3    SFT on worked steps for numbers of 1-2 digits only, then GRPO on 3-digit sums: RL with no demonstration
          (issue 36; not in the default --ways: make reasoning-2to3)
  reworded  SFT on the questions in the training wordings (arithmetic-think-phrased), then GRPO on questions in the
          held-out wordings SFT never saw, the checker their only teacher (not in the default --ways:
          make reasoning-reworded)
Each chain is the project's own commands: train_pretrain.py --tokenizer-digits split (the built-in data, one token per
digit; shared by the three ways of a seed),
train_sft.py --data arithmetic-WAY, train_grpo.py --data arithmetic-WAY [--tools calculator]. Held-out accuracy is on
200 operand pairs no training split holds, answered greedily; a right answer is the final answer's last number.

    python bench/reasoning_chains.py --ways think --seeds 1              # one chain (make reasoning-think)
    python bench/reasoning_chains.py --seeds 1 2 3                       # all nine, the table and the figure
    python bench/reasoning_chains.py --seeds 1 2 3 --report-only         # the table again from the run folders

Prints one row per way (mean +- std over seeds, lowest and highest), writes results.json and the figure
(accuracy and mean reasoning length against GRPO steps, as in DeepSeek-R1-Zero's plots) into --out.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from train_utils import cli, read_metrics  # noqa: E402

WAYS = ("direct", "think", "tool")
# 2to3 (issue 36): worked traces of numbers of 1-2 digits only (each operand its own length) in SFT, then GRPO on the
# 3-digit prompts with the checker as the only supervision for them
# reworded: SFT on 8 wordings per language and operation, GRPO on the 2 it never showed (held-out operand pairs test it)
EXTRA_WAYS = ("2to3", "reworded")
SFT_DATA = {"2to3": "arithmetic-think-1-2", "reworded": "arithmetic-think-phrased"}  # the others: arithmetic-WAY
GRPO_DATA = {"2to3": "arithmetic-think", "reworded": "arithmetic-think-reworded"}
# the same steps of SFT and the same seconds of GRPO for every way: the same budget, whatever each token costs
SFT = ["--config", "tiny", "--max-steps", "1500", "--lr", "1e-3", "--eval-interval", "500"]
GRPO = ["--config", "tiny", "--max-steps", "10000", "--time-budget", "150", "--eval-interval", "10", "--eval-batch",
        "200", "--prompts-per-step", "8", "--num-generations", "8", "--compile-sampling"]
MAX_NEW = {"direct": 24, "think": 160, "tool": 96, "2to3": 160, "reworded": 160}  # the model writes up to ~15, ~150 and ~65 tokens (tool: the call and the answer)


def commands(out, seed, way):
    """[(stage, run dir, argv)] of one chain."""
    pre, sft, grpo = (os.path.join(out, f"seed_{seed}", name) for name in ("pretrain", f"sft_{way}", f"grpo_{way}"))
    sft_data = ["--data", SFT_DATA.get(way, f"arithmetic-{way}"), "--seed", str(seed)]
    grpo_data = ["--data", GRPO_DATA.get(way, f"arithmetic-{way}"), "--seed", str(seed)]
    tools = ["--tools", "calculator"] if way == "tool" else []
    # one token per digit: the worked steps and the copy into a calculator call go digit by digit; the whole cosine
    # in pretraining (train_pretrain.py now cuts it halfway): the figures in BENCHMARKS.md were measured so
    return [("pretrain", pre, ["train_pretrain.py", "--config", "tiny", "--tokenizer-digits", "split",
                               "--lr-decay-steps", "600", "--seed", str(seed), "--out-dir", pre]),
            ("sft", sft, ["train_sft.py", *SFT, "--init-from", pre, *sft_data, "--out-dir", sft]),
            ("grpo", grpo, ["train_grpo.py", *GRPO, "--init-from", sft, *grpo_data, *tools,
                            "--max-new-tokens", str(MAX_NEW[way]), "--out-dir", grpo])]


def run_stage(key, run_dir, argv, timings):
    """Run one stage's command (python argv, from the repository root) unless its run directory holds done.json;
    its seconds go to timings[key]. bench/tool_use.py's chain runs its stages with it too."""
    if os.path.isfile(os.path.join(run_dir, "done.json")):
        print(f"== {key}: done before, reused ({run_dir})")
        return
    print(f"== {key}: python {' '.join(argv)}", flush=True)
    started = time.time()
    subprocess.run([sys.executable, *argv], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    timings[key] = time.time() - started


def run_chain(out, seed, way, timings):
    for stage, run_dir, argv in commands(out, seed, way):
        run_stage(f"{seed}/{stage if stage == 'pretrain' else stage + '_' + way}", run_dir, argv, timings)


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    spread = f" +- {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{spread} [{min(values):.3f}, {max(values):.3f}]"


def evals(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    return [r for r in read_metrics(path) if "val_reward" in r] if os.path.isfile(path) else []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS + EXTRA_WAYS)
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--out", default="checkpoints/reasoning")
    p.add_argument("--report-only", action="store_true", help="read the runs in --out; train nothing")
    args = p.parse_args(argv)
    results_path = os.path.join(args.out, "results.json")
    timings = json.load(open(results_path)).get("seconds", {}) if os.path.isfile(results_path) else {}
    if not args.report_only:
        for seed in args.seeds:
            for way in args.ways:
                run_chain(args.out, seed, way, timings)
                os.makedirs(args.out, exist_ok=True)
                with open(results_path, "w") as f:
                    json.dump({"seconds": timings}, f, indent=1)
    rows, curves = [], {}
    print(f"\n{'way':7} {'after SFT':>28} {'after GRPO: best checkpoint':>28} {'after GRPO: last eval':>28} "
          f"{'reasoning tokens':>28} {'tokens written':>28} {'chain minutes':>28}")
    for way in args.ways:
        before, best, after, length, written, minutes = [], [], [], [], [], []
        for seed in args.seeds:
            e = evals(os.path.join(args.out, f"seed_{seed}", f"grpo_{way}"))
            if not e:
                continue
            before.append(e[0]["val_strict_accuracy"])
            # ckpt_best.pt (what generate.py and serve.py load): the first eval after step 0 with the highest reward
            best.append(max(e[1:] or e, key=lambda r: (r["val_reward"], -r["step"]))["val_strict_accuracy"])
            after.append(e[-1]["val_strict_accuracy"])
            length.append(e[-1]["val_reasoning_length"])
            written.append(e[-1]["val_response_length"])
            chain = [timings.get(f"{seed}/{k}") for k in ("pretrain", f"sft_{way}", f"grpo_{way}")]
            minutes.append(sum(chain) / 60 if None not in chain else None)
            curves.setdefault(way, []).append(e)
        row = {"way": way, "seeds": len(after), "after_sft": before, "after_grpo_best": best, "after_grpo_last": after,
               "reasoning_length": length, "tokens_written": written, "chain_minutes": minutes}
        rows.append(row)
        print(f"{way:7} {summary(before):>28} {summary(best):>28} {summary(after):>28} {summary(length):>28} "
              f"{summary(written):>28} {summary(minutes):>28}")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    os.makedirs(args.out, exist_ok=True)
    with open(results_path, "w") as f:
        json.dump({"seconds": timings, "rows": rows, "machine": machine}, f, indent=1)
    if curves:
        plot(curves, os.path.join(args.out, "reasoning_chains.png"))
        print(f"\nresults: {results_path}; figure: {os.path.join(args.out, 'reasoning_chains.png')}")


def plot(curves, path):
    """Held-out accuracy and mean reasoning length (tokens inside <think>; the whole answer for the other ways)
    against GRPO steps, the mean over seeds at each eval step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (acc, length) = plt.subplots(1, 2, figsize=(10, 3.6))
    for way, runs in curves.items():
        steps = sorted(set.intersection(*[{r["step"] for r in run} for run in runs]))
        at = lambda key: [statistics.mean(next(r[key] for r in run if r["step"] == s) for run in runs) for s in steps]  # noqa: E731
        acc.plot(steps, at("val_strict_accuracy"), marker=".", label=way)
        length.plot(steps, at("val_reasoning_length" if way in ("think", "2to3", "reworded") else "val_response_length"), marker=".", label=way)
    acc.set(xlabel="GRPO step", ylabel="held-out accuracy", ylim=(-0.02, 1.02), title="accuracy")
    length.set(xlabel="GRPO step", ylabel="tokens", title="reasoning length (think) / answer length")
    acc.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    cli(main)
