"""Reference solution of exercise 01 (BPE); the statement is in exercises/stubs/bpe.py."""
from collections import Counter

from tokenizer import SPLIT_PATTERN


def get_stats(ids, counts=None, weight=1):
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2  # skip both: occurrences do not overlap
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe(text, num_merges):
    chunk_counts = Counter(SPLIT_PATTERN.findall(text))
    words = {chunk: list(chunk.encode("utf-8")) for chunk in chunk_counts}
    merges = []
    for i in range(num_merges):
        stats = {}
        for chunk, ids in words.items():
            get_stats(ids, stats, chunk_counts[chunk])
        if not stats:
            break
        pair = max(stats, key=lambda p: (stats[p], -p[0], -p[1]))  # most frequent, then the smallest pair
        if stats[pair] < 2:
            break
        new_id = 256 + i
        merges.append((pair, new_id))
        words = {chunk: merge(ids, pair, new_id) for chunk, ids in words.items()}
    return merges
