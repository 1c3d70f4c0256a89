"""
Compare runs at a glance: train loss, val loss and lr of one or several run directories on shared axes.

    python plot_runs.py checkpoints/pretrain_tiny checkpoints/pretrain_small --out compare.png
    python plot_runs.py checkpoints/ppo_tiny checkpoints/grpo_tiny --keys val_accuracy val_reward,reward --out rl.png
"""
import argparse
import os

from train_utils import cli, plot_metrics


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("run_dirs", nargs="+", help="run directories (each with a metrics.jsonl)")
    p.add_argument("--out", default="runs_comparison.png")
    p.add_argument("--keys", nargs="+", default=["train_loss,val_loss", "lr"],
                   help="one panel per item; an item is metrics.jsonl keys separated by commas")
    args = p.parse_args(argv)
    for d in args.run_dirs:
        if not os.path.isfile(os.path.join(d, "metrics.jsonl")):
            raise FileNotFoundError(f"{d}: no metrics.jsonl (is it a run directory?)")
    plot_metrics(args.run_dirs, args.out, keys=[tuple(item.split(",")) for item in args.keys])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    cli(main)
