"""
Our byte-level BPE against Hugging Face `tokenizers` (ByteLevel BPE, same vocab size, same corpus), in one run:
training time, encode throughput (one call and batch), bytes per token on held-out text (last 10%).

    python bench/bench_tokenizer.py                       # the English and Chinese corpora in ../shared/data
    python bench/bench_tokenizer.py --corpus my.txt --vocab-size 8192
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tokenizer import SPECIAL_TOKENS, BPETokenizer  # noqa: E402
from common import cli  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "pretrain")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", nargs="+", default=[os.path.join(DATA, "tinyshakespeare.txt"), os.path.join(DATA, "xiyouji_zh.txt")])
    p.add_argument("--vocab-size", type=int, default=4096)
    args = p.parse_args()
    missing = [path for path in args.corpus if not os.path.isfile(path)]
    if missing:  # before the optional import and any timing: the flag's own error, with or without the extras
        sys.exit(f"error: {missing[0]}: corpus not found")
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        sys.exit("error: this benchmark compares against HF tokenizers: pip install -r requirements-extras.txt")
    print(f"vocab {args.vocab_size}; ratio = ours / HF (time: lower is better; MB/s: higher is better)")
    print(f"{'corpus':<22}{'train s ours':>13}{'HF':>7}{'ratio':>7} |{'enc MB/s ours':>14}{'HF':>6}{'ratio':>7} |"
          f"{'batch MB/s ours':>16}{'HF':>6}{'ratio':>7} |{'bytes/token ours':>17}{'HF':>7}")
    for path in args.corpus:
        text = open(path, encoding="utf-8").read()
        train_text, held_out = text[:int(len(text) * 0.9)], text[int(len(text) * 0.9):]
        paragraphs = [t for t in train_text.split("\n\n") if t.strip()]
        ours, t_ours = timed(lambda: BPETokenizer.train(paragraphs, args.vocab_size, verbose=False))
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        _, t_hf = timed(lambda: hf.train_from_iterator(paragraphs, trainer))
        n_bytes = len(held_out.encode("utf-8"))
        ours.cache.clear()
        ids, e_ours = timed(lambda: ours.encode(held_out))
        hf_ids, e_hf = timed(lambda: hf.encode(held_out).ids)
        lines = [line for line in text.split("\n")] * 2  # the whole corpus twice, line by line: a batch of ~2 MB+
        batch_bytes = sum(len(line.encode("utf-8")) for line in lines)
        ours.cache.clear()
        _, b_ours = timed(lambda: ours.encode_batch(lines))
        _, b_hf = timed(lambda: hf.encode_batch(lines))
        assert ours.decode(ids) == held_out, "round trip failed"
        mb = lambda n, t: n / t / 1e6
        print(f"{os.path.basename(path):<22}{t_ours:>13.2f}{t_hf:>7.2f}{t_ours / t_hf:>7.2f} |"
              f"{mb(n_bytes, e_ours):>14.2f}{mb(n_bytes, e_hf):>6.2f}{e_hf / e_ours:>7.2f} |"
              f"{mb(batch_bytes, b_ours):>16.2f}{mb(batch_bytes, b_hf):>6.2f}{b_hf / b_ours:>7.2f} |"
              f"{n_bytes / len(ids):>17.3f}{n_bytes / len(hf_ids):>7.3f}")


if __name__ == "__main__":
    cli(main)  # bad flags or files: one line, not a traceback
