"""Exercise 05 - causal attention with grouped KV heads, as the KV cache uses it (plugs into: model.py, Attention)

English. Write softmax(q k^T / sqrt(head_dim) + causal mask) v for queries that are the LAST T positions of S keys
(S >= T): query t sits at position S - T + t and may look at keys 0 .. S - T + t. One function then serves training
(T = S), decoding with a KV cache (T = 1: the new token sees every cached key) and prefilling a chunk after a cache.
Grouped-query attention (GQA, Ainslie et al. 2023): there are fewer key/value heads than query heads; query head h
uses kv head h // (n_heads / n_kv_heads). Why: the mask is what makes a language model causal (no peeking at the
next token); the offset is what lets generation reuse the cached keys instead of recomputing them every step; GQA
shrinks that cache by n_heads / n_kv_heads.

中文。实现 softmax(q k^T / sqrt(head_dim) + 因果掩码) v，其中 query 是 S 个 key 中的最后 T 个位置（S >= T）：
第 t 个 query 位于位置 S - T + t，只能看 key 0 .. S - T + t。这样一个函数同时用于训练（T = S）、带 KV 缓存的解码
（T = 1：新 token 看到所有缓存的 key）以及在缓存之后预填充一段。分组查询注意力（GQA，Ainslie et al. 2023）：
key/value 头比 query 头少；query 头 h 使用第 h // (n_heads / n_kv_heads) 个 kv 头。为什么：掩码让语言模型成为因果的
（不能偷看下一个 token）；偏移让生成时复用缓存的 key，而不必每步重算；GQA 把缓存缩小 n_heads / n_kv_heads 倍。

Do not call F.scaled_dot_product_attention: write the matmuls, the mask and the softmax yourself.
Check: pytest exercises -k attention        Reference: model.py (Attention.forward, grouped_attention, KVCache)
"""


def attention(q, k, v):
    """q (B, n_heads, T, hd); k, v (B, n_kv_heads, S, hd) with S >= T -> (B, n_heads, T, hd)."""
    raise NotImplementedError("exercise attention: write attention() (the statement is at the top of the file)")
