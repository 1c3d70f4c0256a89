"""
Every number the seven stages log, for a fixed seed in float32 on the built-in data: record them once, then check a
changed tree against the record. A refactor that must not change what the scripts compute (issue 29) passes only
if every logged number is identical, to the last bit.

    python bench/stage_fingerprint.py --record bench/fingerprint.json     # before the change
    python bench/stage_fingerprint.py --check bench/fingerprint.json      # after it: exit 1 on any difference
    python bench/stage_fingerprint.py --compare before.json after.json    # two records, nothing run

Each stage runs a few dozen steps in this process (pretrain, SFT, LoRA SFT, reward model, DPO, PPO, GRPO,
distillation), one after another as `make pipeline` chains them. Timings and memory are left out (they differ run to
run); so is anything else the record says was measured on another CPU or torch: float rounding differs between CPUs
(bf16 kernels, AMX, AVX-512), so a record is compared only on the kind of machine that made it.
"""
import argparse
import json
import os
import platform
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

import train_distill  # noqa: E402
import train_dpo  # noqa: E402
import train_grpo  # noqa: E402
import train_ppo  # noqa: E402
import train_pretrain  # noqa: E402
import train_reward  # noqa: E402
import train_sft  # noqa: E402
from train_utils import cli, read_metrics  # noqa: E402

COMMON = ["--config", "tiny", "--batch-size", "4", "--seq-len", "64", "--eval-iters", "2", "--log-interval", "1",
          "--dtype", "float32", "--warmup-steps", "2", "--no-plot", "--seed", "7"]
# run-to-run figures: wall-clock rates and memory are not what a stage computes
VARYING = ("per_sec", "memory_mb", "seconds")
VARYING_KEYS = ("eps",)  # TRL's name for PPO's episodes per second


def stages(root):
    """(name, main, argv) in chain order; each later stage starts from the run directories of earlier ones."""
    d = {name: os.path.join(root, name) for name in ("pretrain", "sft", "sft_lora", "reward", "dpo", "ppo", "grpo",
                                                       "distill")}
    return [
        ("pretrain", train_pretrain.main, ["--max-steps", "40", "--eval-interval", "20", "--vocab-size", "512"]),
        ("sft", train_sft.main, ["--max-steps", "20", "--eval-interval", "10", "--init-from", d["pretrain"],
                                 "--eval-max-new-tokens", "8"]),
        ("sft_lora", train_sft.main, ["--max-steps", "12", "--eval-interval", "6", "--init-from", d["pretrain"],
                                      "--eval-max-new-tokens", "8", "--lora-rank", "4"]),
        ("reward", train_reward.main, ["--max-steps", "12", "--eval-interval", "6", "--init-from", d["sft"]]),
        ("dpo", train_dpo.main, ["--max-steps", "12", "--eval-interval", "6", "--init-from", d["sft"],
                                 "--eval-max-new-tokens", "8"]),
        ("ppo", train_ppo.main, ["--max-steps", "4", "--eval-interval", "2", "--init-from", d["sft"], "--reward-model",
                                 d["reward"], "--rollout-batch", "4", "--minibatch-size", "2", "--ppo-epochs", "1",
                                 "--max-new-tokens", "6", "--eval-batch", "4"]),
        ("grpo", train_grpo.main, ["--max-steps", "8", "--eval-interval", "4", "--init-from", d["sft"],
                                   "--prompts-per-step", "2", "--num-generations", "4", "--max-new-tokens", "6",
                                   "--eval-batch", "8"]),
        ("distill", train_distill.main, ["--max-steps", "12", "--eval-interval", "6", "--teacher", d["pretrain"]]),
    ], d


def fingerprint(root):
    """{stage: [metrics.jsonl rows without the varying figures]} after running every stage into root."""
    os.environ["MINIGPT_DATA_DIR"] = os.path.join(root, "cache")
    runs, dirs = stages(root)
    out = {}
    for name, main, argv in runs:
        print(f"== {name}", file=sys.stderr)
        main(COMMON + argv + ["--out-dir", dirs[name]])
        out[name] = [{k: v for k, v in row.items() if not any(s in k for s in VARYING) and k not in VARYING_KEYS}
                     for row in read_metrics(os.path.join(dirs[name], "metrics.jsonl"))]
    return out


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads()}


def differences(recorded, measured):
    """Lines naming each (stage, row, key) whose value differs, or that one side lacks."""
    lines = []
    for stage in sorted(set(recorded) | set(measured)):
        a, b = recorded.get(stage, []), measured.get(stage, [])
        if len(a) != len(b):
            lines.append(f"{stage}: {len(a)} logged rows recorded, {len(b)} now")
        for i, (ra, rb) in enumerate(zip(a, b)):
            for key in sorted(set(ra) | set(rb)):
                if ra.get(key) != rb.get(key):
                    lines.append(f"{stage} row {i} (step {ra.get('step')}) {key}: recorded {ra.get(key)!r}, now {rb.get(key)!r}")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--record", metavar="FILE", help="run every stage and write their logged numbers to FILE")
    what.add_argument("--check", metavar="FILE", help="run every stage and compare with FILE; exit 1 on a difference")
    what.add_argument("--compare", nargs=2, metavar=("RECORDED", "MEASURED"),
                      help="compare two records (each from --record), running nothing; exit 1 on a difference")
    args = p.parse_args(argv)
    if args.compare:
        with open(args.compare[1]) as f:
            other = json.load(f)
        return compare(args.compare[0], other["stages"], other["machine"])
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as root:
        measured = fingerprint(root)
    here = machine()
    if args.record:
        with open(args.record, "w") as f:
            json.dump({"machine": here, "stages": measured}, f, indent=0)
        print(f"recorded {sum(map(len, measured.values()))} logged rows of {len(measured)} stages in {args.record} "
              f"({here['cpu']}, torch {here['torch']})")
        return 0
    return compare(args.check, measured, here)


def compare(path, measured, here):
    """Print each difference between the record in `path` and `measured` (made on machine `here`); 1 if any."""
    with open(path) as f:
        record = json.load(f)
    if record["machine"] != here:
        raise ValueError(f"{path}: recorded on {record['machine']}, this is {here}: float rounding differs between "
                         f"machines, so record again here (on the commit before the change) and compare that")
    diff = differences(record["stages"], measured)
    for line in diff[:40]:
        print(line)
    rows = sum(map(len, measured.values()))
    print(f"{'identical' if not diff else f'{len(diff)} differences'}: {rows} logged rows of {len(measured)} stages "
          f"against {path}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(cli(main))
