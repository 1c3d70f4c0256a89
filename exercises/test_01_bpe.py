"""Exercise 01: BPE. Compared with tokenizer.py's merge and BPETokenizer.train, then used to compress real text."""
import random

import builtin_data
from harness import expect_equal, load
from tokenizer import BPETokenizer, merge

TEXT = "\n".join(builtin_data.pretrain_texts(seed=0)[:300])


def test_bpe_get_stats_counts_adjacent_pairs():
    bpe = load("bpe")
    expect_equal(bpe.get_stats([1, 2, 3, 1, 2]), {(1, 2): 2, (2, 3): 1, (3, 1): 1}, "get_stats([1, 2, 3, 1, 2])")
    expect_equal(bpe.get_stats([7]), {}, "get_stats([7]) (no pairs)")
    expect_equal(bpe.get_stats([1, 2], {(1, 2): 3}, weight=2), {(1, 2): 5}, "get_stats([1, 2], {(1, 2): 3}, weight=2)")


def test_bpe_merge_equals_the_projects_on_random_lists():
    bpe = load("bpe")
    rng = random.Random(0)
    for _ in range(300):
        ids = [rng.randint(0, 3) for _ in range(rng.randint(0, 12))]
        pair = (rng.randint(0, 3), rng.randint(0, 3))
        expect_equal(bpe.merge(ids, pair, 99), merge(ids, pair, 99), f"merge({ids}, {pair}, 99)")


def test_bpe_training_learns_the_projects_merges_in_order():
    bpe = load("bpe")
    mine = bpe.train_bpe(TEXT, 120)
    project = BPETokenizer.train([TEXT], vocab_size=256 + 120 + len(BPETokenizer().special_tokens), verbose=False)

    def spelled(merges, offset):  # each merge as the two byte strings it joins: comparable whatever the id offset
        vocab = {i + offset: bytes([i]) for i in range(256)}
        out = []
        for (a, b), new_id in merges:
            vocab[new_id] = vocab[a] + vocab[b]
            out.append((vocab[a], vocab[b]))
        return out

    theirs = spelled(project.merges, len(project.special_tokens))
    ours = spelled(mine, 0)
    for i, (m, t) in enumerate(zip(ours, theirs)):
        expect_equal(m, t, f"merge number {i}")
    expect_equal(len(ours), len(theirs), "number of merges learned")


def test_bpe_with_your_merges_compresses_the_built_in_text_and_round_trips():
    bpe = load("bpe")
    merges = bpe.train_bpe(TEXT, 200)
    ranks = {pair: new_id for pair, new_id in merges}
    sample = "\n".join(builtin_data.pretrain_texts(seed=1)[:40])  # text the merges were not learned from

    def encode(text):  # minbpe's encode: apply the earliest-learned merge present, until none applies
        ids = list(text.encode("utf-8"))
        while len(ids) > 1:
            pair = min(bpe.get_stats(ids), key=lambda p: ranks.get(p, float("inf")))
            if pair not in ranks:
                break
            ids = bpe.merge(ids, pair, ranks[pair])
        return ids

    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), new_id in merges:
        vocab[new_id] = vocab[a] + vocab[b]
    for n in (0, 50, 200):
        ranks = {pair: new_id for pair, new_id in merges[:n]}
        ids = encode(sample)
        print(f"{n:>3} merges: {len(sample.encode('utf-8')) / len(ids):.2f} bytes per token")
    expect_equal(b"".join(vocab[i] for i in ids).decode("utf-8"), sample, "decode(encode(text))")
    ratio = len(sample.encode("utf-8")) / len(ids)
    assert ratio > 1.8, f"200 merges compress unseen built-in text only {ratio:.2f}x (the reference solution: 2.1x)"
