"""
Reward hacking on purpose (Gao et al. 2022, "Scaling laws for reward model overoptimization"): PPO climbs a reward
model (the proxy) while the built-in answer checker (the gold reward the proxy only approximates) says whether the
answers really got better. Two PPO runs from the same SFT model, held-out replies scored at every eval:

  hacking   a weak reward model (train_reward.py --no-likelihood: a head on a fine-tuned backbone, which cannot read
            facts or names it was not trained on) and no KL penalty (--no-adaptive-kl --kl-coef 0)
  default   the pipeline's reward model (head + the SFT model's likelihood) with adaptive KL toward --target-kl 3

    make reward-hacking                         # after make pipeline (or its sft and reward stages)
    python bench/reward_hacking.py --runs checkpoints --config tiny

Both are the project's own commands; finished runs are reused. Writes reward_hacking.png (proxy reward gain and gold
accuracy against sqrt(KL to the SFT model), as Gao et al. plot them) and reward_hacking_results.json into --out.
"""
import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from train_utils import cli, read_metrics  # noqa: E402


def runs(args):
    """{name: (run dir, [(script, argv)])}: the weak reward model and the two PPO runs, as commands."""
    sft, reward = (os.path.join(args.runs, f"{stage}_{args.config}") for stage in ("sft", "reward"))
    weak, hacking, default = (os.path.join(args.runs, f"{name}_{args.config}")
                              for name in ("reward_weak", "ppo_hacking", "ppo_curve"))
    common = ["--config", args.config, "--init-from", sft, "--seed", str(args.seed)]
    last = args.stage_args  # last on each line, so they win over the flags above
    ppo_last = shlex.split(args.ppo_args) + last
    return {
        "weak reward model": (weak, ["train_reward.py", *common, "--no-likelihood", "--out-dir", weak, *last]),
        "hacking": (hacking, ["train_ppo.py", *common, "--reward-model", weak, "--no-adaptive-kl", "--kl-coef", "0",
                              "--max-steps", str(args.hacking_steps), "--eval-interval", "5", "--out-dir", hacking, *ppo_last]),
        "default": (default, ["train_ppo.py", *common, "--reward-model", reward, "--eval-interval", "10",
                              *(["--max-steps", str(args.default_steps)] if args.default_steps else []), "--out-dir", default,
                              *ppo_last]),
    }


def curve(run_dir):
    """[(step, KL to SFT, proxy reward, gold accuracy)] of a PPO run's held-out evals."""
    return [(r["step"], r["val_kl"], r["val_reward"], r["val_accuracy"])
            for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if "val_reward" in r]


def plot(curves, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for (name, points), style in zip(curves.items(), ("o-", "s-")):
        x = [math.sqrt(max(kl, 0.0)) for _, kl, _, _ in points]
        left.plot(x, [proxy - points[0][2] for _, _, proxy, _ in points], style, label=name, markersize=3)
        right.plot(x, [gold for _, _, _, gold in points], style, label=name, markersize=3)
    left.set(xlabel="sqrt(KL to the SFT model), nats^0.5", ylabel="proxy: reward-model score gained",
             title="what PPO optimises")
    right.set(xlabel="sqrt(KL to the SFT model), nats^0.5", ylabel="gold: held-out accuracy (checker)",
              title="what we wanted")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.legend(*left.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="checkpoints", help="where make pipeline put sft_<config> and reward_<config>")
    p.add_argument("--config", default="tiny")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--hacking-steps", type=int, default=80, help="PPO updates of the hacking run (KL passes ~40 nats)")
    p.add_argument("--default-steps", type=int, default=None, help="PPO updates of the default run (default: train_ppo.py's)")
    p.add_argument("--stage-args", nargs=argparse.REMAINDER, default=[],
                   help="flags added to every command (last on the line), e.g. --stage-args --dtype float32")
    p.add_argument("--ppo-args", default="", help="flags added to both PPO commands only, as one string, e.g. "
                   "--ppo-args='--rollout-batch 16' (as the Makefile's PPO_ARGS)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench"), help="folder for the figure and results")
    args = p.parse_args(argv)
    for stage in ("sft", "reward"):
        if not os.path.isfile(os.path.join(args.runs, f"{stage}_{args.config}", "done.json")):
            raise FileNotFoundError(f"{args.runs}/{stage}_{args.config}: no finished run; run `make pipeline` "
                                    f"(or `make {stage}`) first, or pass --runs DIR")
    minutes, planned = {}, runs(args)
    for name, (run_dir, argv) in planned.items():
        if os.path.isfile(os.path.join(run_dir, "done.json")):
            print(f"== {name}: done before, reused ({run_dir})")
            continue
        print(f"== {name}: python {' '.join(argv)}", flush=True)
        started = time.time()
        r = subprocess.run([sys.executable, *argv, "--overwrite", "--no-plot"], cwd=ROOT, stdout=subprocess.DEVNULL)
        if r.returncode:  # its own one-line error is already on stderr
            raise ValueError(f"{run_dir}: {argv[0]} failed (exit {r.returncode}), see its message above")
        minutes[name] = (time.time() - started) / 60
    hacking_dir, default_dir = planned["hacking"][0], planned["default"][0]
    curves = {"weak reward model, no KL penalty": curve(hacking_dir),
              "default: reward model with likelihood, adaptive KL (target 3)": curve(default_dir)}
    os.makedirs(args.out, exist_ok=True)
    plot(curves, os.path.join(args.out, "reward_hacking.png"))
    for name, points in curves.items():
        best = max(points, key=lambda p: p[3])
        print(f"\n{name}\n{'step':>5} {'KL':>7} {'proxy':>8} {'gold':>6}")
        for step, kl, proxy, gold in points:
            print(f"{step:>5} {kl:>7.2f} {proxy:>+8.3f} {gold:>6.3f}")
        print(f"gold accuracy {points[0][3]:.3f} at step 0, highest {best[3]:.3f} (step {best[0]}, KL {best[1]:.2f}), "
              f"last {points[-1][3]:.3f} (KL {points[-1][1]:.2f}); proxy {points[0][2]:+.3f} -> {points[-1][2]:+.3f}")
    results = {"machine": platform.processor() or platform.machine(), "config": args.config, "seed": args.seed,
               "minutes": minutes, "curves": {name: [dict(zip(("step", "kl", "proxy", "gold"), p)) for p in points]
                                              for name, points in curves.items()}}
    with open(os.path.join(args.out, "reward_hacking_results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nfigure: {os.path.join(args.out, 'reward_hacking.png')}")


if __name__ == "__main__":
    cli(main)
