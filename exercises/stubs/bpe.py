"""Exercise 01 - BPE: count pairs, merge a pair, learn the merges (plugs into: tokenizer.py, BPETokenizer.train)

English. A byte-level BPE tokenizer starts from the 256 byte values and repeatedly gives the most frequent adjacent
pair of tokens a new id. Write the three pieces: `get_stats` counts adjacent pairs, `merge` replaces one pair by a new
id, and `train_bpe` runs the loop. Why: the tokenizer decides what a model can see - frequent words become one token
(short sequences, cheap training), rare text still falls back to bytes (nothing is unknown).

中文。字节级 BPE（Byte Pair Encoding，字节对编码）分词器从 256 个字节值出发，每一步把出现次数最多的相邻 token 对
合并成一个新 id。请写出三个部分：`get_stats` 统计相邻对的次数，`merge` 把某一对替换成新 id，`train_bpe` 完成训练循环。
为什么：分词器决定模型"看到"什么——常见的词变成一个 token（序列更短，训练更省），罕见的文字仍能退回到字节（没有未知词）。

Rules that make your merges equal the project's (the test compares them one by one):
- split the text into chunks with tokenizer.SPLIT_PATTERN (given below); pairs never cross a chunk boundary;
- the most frequent pair wins; among equally frequent pairs the smallest (a, b) wins;
- stop early when the best pair occurs fewer than 2 times; new ids are 256, 257, ... in order.
Check: pytest exercises -k bpe        Reference: tokenizer.py (merge, BPETokenizer.train)
"""
from collections import Counter

from tokenizer import SPLIT_PATTERN


def get_stats(ids, counts=None, weight=1):
    """Add weight to counts[(a, b)] for every adjacent pair in ids; return counts (a new dict when None).
    Example: get_stats([1, 2, 3, 1, 2]) -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}"""
    raise NotImplementedError("exercise bpe: write get_stats() (the statement is at the top of the file)")


def merge(ids, pair, new_id):
    """Replace every non-overlapping occurrence of pair in ids, left to right, with new_id.
    Example: merge([1, 2, 3, 1, 2], (1, 2), 4) -> [4, 3, 4];  merge([1, 1, 1], (1, 1), 4) -> [4, 1]"""
    raise NotImplementedError("exercise bpe: write merge() (the statement is at the top of the file)")


def train_bpe(text, num_merges):
    """Learn up to num_merges merges from text: a list of ((a, b), new_id), new_id = 256, 257, ..."""
    chunk_counts = Counter(SPLIT_PATTERN.findall(text))                     # each distinct chunk once, with its count
    words = {chunk: list(chunk.encode("utf-8")) for chunk in chunk_counts}  # chunk -> its token ids (bytes at first)
    merges = []
    # your loop: count the pairs over all words (weighted by chunk_counts), pick the best, merge it everywhere
    raise NotImplementedError("exercise bpe: write the loop of train_bpe() (the statement is at the top of the file)")
