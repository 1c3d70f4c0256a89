"""
One screen after `make pipeline`: each stage's headline metrics at its first evaluation (before training) and at
its best checkpoint (after), read from the run directories' metrics.jsonl. After `make pipeline SEEDS="1337 1 2"`
(one chain per seed in OUT/seed_<seed>/), each figure is the mean +- the standard deviation over the seeds, with the
lowest and highest seed.

    python pipeline_report.py checkpoints --config tiny
"""
import argparse
import glob
import os
import statistics
import sys

from train_utils import cli, read_metrics

# stage: (what picks the best checkpoint: key and whether higher is better, [(metric key, label)])
STAGES = {
    "pretrain": (("val_loss", False), [("val_loss", "val loss"), ("val_bpb", "bits per byte")]),
    "sft": (("pass_rate", True), [("val_loss", "assistant-token val loss"), ("pass_rate", "held-out answer accuracy")]),
    "sft_lora": (("pass_rate", True), [("val_loss", "assistant-token val loss"),
                                       ("pass_rate", "held-out answer accuracy")]),
    "reward": (("val_loss", False), [("eval_accuracy", "held-out pairwise accuracy"), ("eval_margin", "reward margin")]),
    "dpo": (("val_loss", False), [("eval_rewards/accuracies", "held-out preference accuracy"),
                                  ("eval_rewards/margins", "reward margin"), ("pass_rate", "held-out answer accuracy")]),
    "ppo": (("val_reward", True), [("val_reward", "held-out reward"), ("val_accuracy", "held-out answer accuracy"),
                                   ("val_kl", "KL to the SFT model")]),
    "grpo": (("val_reward", True), [("val_reward", "held-out reward"), ("val_accuracy", "held-out answer accuracy"),
                                    ("val_strict_accuracy", "held-out strict accuracy")]),
}


def report(out_dir, config):
    """The table as a list of (stage, metric, before, after, best step) rows; stages that have not run are skipped."""
    rows = []
    for stage, ((best_key, higher), metrics) in STAGES.items():
        path = os.path.join(out_dir, f"{stage}_{config}", "metrics.jsonl")
        if not os.path.isfile(path):
            continue
        evals = [r for r in read_metrics(path) if best_key in r]
        if not evals:
            continue
        trained = [r for r in evals if r["step"] > 0] or evals  # step 0 is the start, never the best (train_utils.track_best)
        best = (max if higher else min)(trained, key=lambda r: r[best_key])
        for key, label in metrics:
            if key in evals[0]:
                rows.append((stage, label, evals[0][key], best.get(key), best["step"]))
    return rows


def seed_report(out_dir, config):
    """{seed: rows} for the seed_<seed>/ chains of `make pipeline SEEDS=...` in out_dir (empty when there are none)."""
    runs = {os.path.basename(d)[len("seed_"):]: report(d, config) for d in sorted(glob.glob(os.path.join(out_dir, "seed_*")))}
    return {seed: rows for seed, rows in runs.items() if rows}


def spread(values):
    """'0.812 +- 0.021 [0.790, 0.833]': mean +- sample standard deviation [lowest, highest]."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {sd:.3f} [{min(values):.3f}, {max(values):.3f}]"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("out_dir", nargs="?", default="checkpoints")
    p.add_argument("--config", default="tiny")
    args = p.parse_args(argv)
    seeds = seed_report(args.out_dir, args.config)
    if seeds:
        table = {}  # (stage, metric) -> [(before, after, best step)] over the seeds
        for rows in seeds.values():
            for stage, label, before, after, step in rows:
                table.setdefault((stage, label), []).append((before, after, step))
        print(f"{len(seeds)} seeds ({', '.join(seeds)}): mean +- standard deviation [lowest, highest]")
        print(f"{'stage':<9} {'metric':<31} {'before':>33}   {'after':>33}  best steps")
        for (stage, label), values in table.items():
            before, after, steps = zip(*values)
            print(f"{stage:<9} {label:<31} {spread(before):>33}   {spread(after):>33}  {', '.join(map(str, steps))}")
        return
    rows = report(args.out_dir, args.config)
    if not rows:
        sys.exit(f"error: {args.out_dir}: no <stage>_{args.config}/metrics.jsonl (nor seed_*/ chains); run `make pipeline` "
                 f"first")
    print(f"{'stage':<9} {'metric':<31} {'before':>9} {'after':>9}  best checkpoint")
    for stage, label, before, after, step in rows:
        print(f"{stage:<9} {label:<31} {before:>9.3f} {after:>9.3f}  step {step}")


if __name__ == "__main__":
    cli(main)
