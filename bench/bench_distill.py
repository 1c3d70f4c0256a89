"""
Does distillation pay? A tiny student trained with train_distill.py from a larger teacher against the same student
trained for the same steps without one (--alpha 0: same initial weights, same batches), on the built-in text and on
Tiny Shakespeare, for each seed; judged by bits per byte over every held-out byte once.

    python bench/bench_distill.py                                     # both datasets, seeds 1337 and 1 (~80 min here)
    python bench/bench_distill.py --datasets shakespeare --seeds 1    # one dataset, one seed
    python bench/bench_distill.py --reuse                             # only the runs that are missing, then the table
    python bench/bench_distill.py --teacher-topk 64                   # students from the teacher's stored top-64
    python bench/bench_distill.py --steps 4 --out /tmp/d -- --seq-len 32   # flags after -- go to every run

Splits: the built-in text's documents shuffled with random.Random(0), the first 5% held out; Tiny Shakespeare's last
10% of bytes held out. Each split is written to files, so teacher and students see the same text.
"""
import argparse
import math
import os
import random
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import builtin_data  # noqa: E402
from model import load_model  # noqa: E402
from tokenizer import BPETokenizer  # noqa: E402
from common import cli  # noqa: E402

# the teacher: 5x the tiny student's parameters. Dropout 0.2 on the built-in text, where without it the teacher
# overfit by step 300 (held-out loss 0.437) and was worse than the tiny student itself (0.405): nothing to teach
TEACHER = ["--model-override", "dim=256", "n_layers=6", "n_heads=8", "n_kv_heads=4"]
TEACHER_EXTRA = {"builtin": ["dropout=0.2"], "shakespeare": []}


def write_splits(name, out, shakespeare):
    """Write OUT/NAME_train.txt and OUT/NAME_val.txt (blank-line separated documents) once."""
    train, val = (os.path.join(out, f"{name}_{s}.txt") for s in ("train", "val"))
    if not (os.path.exists(train) and os.path.exists(val)):
        if name == "builtin":
            docs = builtin_data.pretrain_texts()
            order = list(range(len(docs)))
            random.Random(0).shuffle(order)
            held = set(order[:round(len(docs) * 0.05)])
            parts = ["\n\n".join(d for i, d in enumerate(docs) if i not in held) + "\n",
                     "\n\n".join(d for i, d in enumerate(docs) if i in held) + "\n"]
        else:
            if not os.path.exists(shakespeare):
                raise FileNotFoundError(f"{shakespeare}: no Tiny Shakespeare here; pass --shakespeare PATH or "
                                        f"--datasets builtin")
            text = open(shakespeare, encoding="utf-8").read()
            cut = len(text) - len(text) // 10
            parts = [text[:cut], text[cut:].lstrip("\n")]
        for path, part in zip((train, val), parts):
            with open(path, "w", encoding="utf-8") as f:
                f.write(part)
    return train, val


@torch.no_grad()
def exact_bits_per_byte(run_dir, val_path):
    """Every held-out document as training packs it (<|im_start|> text <|im_end|>), in blocks of the model's context,
    each target token once; the sum of its losses in bits over the documents' UTF-8 bytes."""
    model = load_model(run_dir)
    tok = BPETokenizer.load(os.path.join(run_dir, "tokenizer.json"))
    docs = [d for d in open(val_path, encoding="utf-8").read().split("\n\n") if d.strip()]
    ids = [i for d in docs for i in tok.encode(d, add_special_tokens=True)]
    T, nats = model.config.max_seq_len, 0.0
    for start in range(0, len(ids) - 1, T):
        y = torch.tensor(ids[start + 1:start + T + 1])
        x = torch.tensor(ids[start:start + len(y)])
        nll = torch.nn.functional.cross_entropy(model(x[None]).logits[0].float(), y, reduction="none")
        nats += float((nll * (y != tok.bos_id)).sum())  # a document's first token is given, never predicted
    return nats / math.log(2) / sum(len(d.encode("utf-8")) for d in docs)


def run(cmd, run_dir, reuse):
    """One stage in its own process (as a user runs it); skipped with --reuse when its run directory is complete."""
    if reuse and os.path.exists(os.path.join(run_dir, "ckpt_best.pt")):
        print(f"reusing {run_dir}")
        return
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    r = subprocess.run([sys.executable, *cmd, "--out-dir", run_dir, "--overwrite", "--no-plot"], cwd=ROOT,
                       stdout=subprocess.DEVNULL)  # its errors still reach stderr
    if r.returncode:
        raise ValueError(f"{run_dir}: {cmd[0]} failed (exit {r.returncode}), see its message above")
    print(f"  {time.time() - t0:.0f} s", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["builtin", "shakespeare"], choices=["builtin", "shakespeare"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1337, 1])
    p.add_argument("--steps", type=int, default=600, help="for the teacher and every student")
    p.add_argument("--out", default="bench_runs/distill")
    p.add_argument("--shakespeare", default=os.path.join(ROOT, "..", "shared", "data", "pretrain", "tinyshakespeare.txt"))
    p.add_argument("--builtin-tokenizer", default=os.path.join(ROOT, "checkpoints", "pretrain_tiny", "tokenizer.json"),
                   help="the built-in teacher's tokenizer (the pipeline's); trained on the split when it is missing")
    p.add_argument("--teacher-topk", type=int, default=0, help="distil from the teacher's top-k (0: the live teacher)")
    p.add_argument("--reuse", action="store_true", help="keep every run that already has a ckpt_best.pt")
    p.add_argument("run_flags", nargs="*", help="after --: more flags for every run, teacher and students")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    steps = ["--max-steps", str(args.steps), "--eval-interval", str(max(1, args.steps // 6)), *args.run_flags]
    rows = []
    for name in args.datasets:
        train, val = write_splits(name, args.out, args.shakespeare)
        data = ["--data", train, "--val-data", val]
        teacher = os.path.join(args.out, f"teacher_{name}")
        tok = (["--tokenizer", args.builtin_tokenizer] if name == "builtin" and os.path.exists(args.builtin_tokenizer)
               else ["--vocab-size", "2048"])
        # the whole cosine, as the students get (train_pretrain.py alone cuts it halfway, for the pipeline's later stages)
        run(["train_pretrain.py", *TEACHER, *TEACHER_EXTRA[name], *tok, *data, "--lr-decay-steps", str(args.steps), *steps],
            teacher, args.reuse)
        for seed in args.seeds:
            for kind, flags in (("plain", ["--alpha", "0"]), ("distill", ["--teacher-topk", str(args.teacher_topk)])):
                run(["train_distill.py", "--teacher", teacher, *data, *steps, "--seed", str(seed), *flags],
                    os.path.join(args.out, f"{name}_{kind}_{seed}"), args.reuse)
        bpb = lambda d: exact_bits_per_byte(os.path.join(args.out, d), val)
        teacher_bpb = bpb(f"teacher_{name}")
        for seed in args.seeds:
            rows.append((name, seed, teacher_bpb, bpb(f"{name}_plain_{seed}"), bpb(f"{name}_distill_{seed}")))
    print(f"\nheld-out bits per byte at each run's best checkpoint ({args.steps} steps)")
    print(f"{'data':<12} {'seed':>5} {'teacher':>8} {'no teacher':>11} {'distilled':>10} {'ratio':>6}")
    for name, seed, t, plain, distilled in rows:
        print(f"{name:<12} {seed:>5} {t:>8.4f} {plain:>11.4f} {distilled:>10.4f} {distilled / plain:>6.3f}"
              f"{'  (distilled wins)' if distilled < plain else ''}")


if __name__ == "__main__":
    cli(main)
