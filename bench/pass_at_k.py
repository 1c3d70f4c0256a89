"""
pass@k before and after RL: does GRPO make the model find answers it could not find before, or only find more often
the ones it could already sample? (Yue et al. 2025 asked this of large reasoning models.)

For each run directory, n answers are sampled at temperature 1 for each held-out question; with c of them right,
pass@k = 1 - C(n - c, k) / C(n, k), the unbiased estimator of Chen et al. 2021 (the chance that at least one of k
answers drawn without replacement from the n is right), averaged over questions.

    python bench/pass_at_k.py --runs checkpoints/reasoning/seed_1/sft_think checkpoints/reasoning/seed_1/grpo_think \
        --data arithmetic-think --n 32

Prints a row of pass@1 ... pass@n per run, writes pass_at_k_results.json and pass_at_k.png into --out.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from builtin_data import check_answer_strictly  # noqa: E402
from data import heldout_prompts  # noqa: E402
from generate import GenerationConfig, TextGenerator  # noqa: E402
from model import load_model  # noqa: E402
from tokenizer import BPETokenizer  # noqa: E402
from tools import final_answer  # noqa: E402
from train_utils import cli  # noqa: E402


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are right (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), computed as
    a product so large n does not overflow. Example: n=4, c=1, k=2 -> 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5"""
    if k > n:
        raise ValueError(f"pass@{k} needs at least k samples, got n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def sample_correct_counts(run_dir, prompts, n, max_new_tokens, seed, batch):
    """[c per prompt]: how many of n answers sampled at temperature 1 are right (the final answer's last number)."""
    tokenizer = BPETokenizer.load(os.path.join(run_dir, "tokenizer.json"))
    generator = TextGenerator(load_model(run_dir, "cpu"), tokenizer)
    encoded = [tokenizer.apply_chat_template(p["prompt"], add_generation_prompt=True)[0] for p in prompts]
    counts = []
    for i, (ids, record) in enumerate(zip(encoded, prompts)):
        right = 0
        for start in range(0, n, batch):
            cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=1.0, seed=seed * 1_000_003 + i * 1009 + start)
            with torch.no_grad():
                answers = generator.generate_ids([ids] * min(batch, n - start), cfg)
            right += sum(check_answer_strictly(final_answer(tokenizer.decode(a)), record["answer"]) for a in answers)
        counts.append(int(right))
    return counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="run directories (e.g. an SFT run and the GRPO run from it)")
    p.add_argument("--data", default="arithmetic-think", help="built-in source whose held-out questions are asked")
    p.add_argument("--n", type=int, default=32, help="answers sampled per question (the largest k)")
    p.add_argument("--questions", type=int, default=100, help="held-out questions asked (the first ones)")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--batch", type=int, default=32, help="answers sampled together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--names", nargs="+", default=None, help="a label per run (default: the folder names)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench"))
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    prompts = (heldout_prompts([args.data]) or [])[:args.questions]
    if not prompts:
        raise ValueError(f"--data {args.data}: no built-in held-out questions (arithmetic-think, arithmetic-tool, builtin ...)")
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= args.n]
    names = args.names or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    results = {}
    print(f"{'run':28} " + " ".join(f"{'pass@' + str(k):>8}" for k in ks) + f" {'minutes':>8}")
    for name, run_dir in zip(names, args.runs):
        started = time.time()
        counts = sample_correct_counts(run_dir, prompts, args.n, args.max_new_tokens, args.seed, args.batch)
        curve = {k: sum(pass_at_k(args.n, c, k) for c in counts) / len(counts) for k in ks}
        results[name] = {"run": run_dir, "correct_counts": counts, "pass_at_k": curve,
                         "minutes": (time.time() - started) / 60}
        print(f"{name:28} " + " ".join(f"{curve[k]:>8.3f}" for k in ks) + f" {results[name]['minutes']:>8.1f}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "pass_at_k_results.json"), "w") as f:
        json.dump({"machine": platform.processor() or platform.machine(), "data": args.data, "n": args.n,
                   "questions": len(prompts), "results": results}, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, r in results.items():
        ax.plot(ks, [r["pass_at_k"][k] for k in ks], marker="o", label=name)
    ax.set(xscale="log", xlabel="k (answers sampled at temperature 1)", ylabel="pass@k on held-out questions",
           ylim=(-0.02, 1.02), title=f"pass@k, {args.data}")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "pass_at_k.png"), dpi=110)
    print(f"figure: {os.path.join(args.out, 'pass_at_k.png')}")


if __name__ == "__main__":
    cli(main)
