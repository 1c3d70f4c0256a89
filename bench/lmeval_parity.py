"""
eval_benchmarks.py against lm-evaluation-harness on the same items: the run is exported with export_hf.py, the
harness's HFLM scores every (context, answer) pair ours scores, and the table gives the largest log-likelihood
difference and both accuracies per task. Multiple choice and LAMBADA are compared with add_bos_token=True (the
harness's default on an exported folder), WikiText's rolling page log-likelihoods with add_bos_token=False.

    python bench/lmeval_parity.py --checkpoint checkpoints/sft_tiny --data-dir ../shared/data/eval --limit 100

Needs the optional lm-eval package (pip install -r requirements-extras.txt). Items the harness refuses (an answer
longer than the context window) are counted and left out of the comparison.
"""
import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import eval_benchmarks as eb  # noqa: E402
from common import cli  # noqa: E402

TASKS = ["hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "boolq", "lambada", "wikitext2"]


def requests(kind, arguments):
    from lm_eval.api.instance import Instance
    return [Instance(request_type=kind, doc={}, arguments=args, idx=0) for args in arguments]


def accuracy(lls, items):
    return sum(max(range(len(x)), key=x.__getitem__) == item.gold for x, item in zip(lls, items)) / max(1, len(items))


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a run directory")
    p.add_argument("--data-dir", required=True, help="task files in their public formats (as eval_benchmarks.py reads)")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--limit", type=int, default=100, help="items per task (WikiText: every page)")
    args = p.parse_args()
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise ValueError("lm-eval is not installed: pip install -r requirements-extras.txt") from None
    from export_hf import export

    ours_scorer = eb.our_scorer(args.checkpoint)
    hf_dir = export(args.checkpoint, tempfile.mkdtemp(prefix="lmeval_parity_"))
    harness = {bos: HFLM(pretrained=hf_dir, device="cpu", batch_size=16, add_bos_token=bos) for bos in (True, False)}
    print(f"{'task':<14} {'n':>4} {'refused':>7} {'max |ll diff|':>14} {'ours':>7} {'lm-eval':>8}")
    for task in args.tasks:
        items = eb.load_task(eb.find_task_file(args.data_dir, task), task, None if task == "wikitext2" else args.limit)
        if task == "wikitext2":
            ours = eb.evaluate_task(ours_scorer, task, items, progress=False)
            pages = [(eb.wikitext_detokenize(item.pairs[0][1]),) for item in items]
            theirs = harness[False].loglikelihood_rolling(requests("loglikelihood_rolling", pages), disable_tqdm=True)
            diff = max(abs(a - b) for a, b in zip(ours["lls"], theirs))
            print(f"{task:<14} {len(items):>4} {0:>7} {diff:>14.2e}   (bits/byte {ours['metrics']['bits_per_byte'][0]:.4f})")
            continue
        lm = harness[True]
        kept = [it for it in items if all(len(lm.tok_encode(answer)) <= lm.max_length for _, answer in it.pairs)]
        ours = eb.evaluate_task(ours_scorer, task, kept, progress=False)["lls"]
        scored = iter(ll for ll, _ in lm.loglikelihood(requests("loglikelihood", [pr for it in kept for pr in it.pairs]),
                                                        disable_tqdm=True))
        theirs = [[next(scored) for _ in it.pairs] for it in kept]
        diff = max(abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x, y))
        acc = (f"{accuracy(ours, kept):>7.4f} {accuracy(theirs, kept):>8.4f}" if task != "lambada"
               else f"{'':>7} {'':>8}")
        print(f"{task:<14} {len(kept):>4} {len(items) - len(kept):>7} {diff:>14.2e} {acc}")


if __name__ == "__main__":
    cli(main)
