"""Exercise 04 - rotary position embeddings, RoPE (plugs into: model.py, rope_tables and apply_rope, on q and k)

English. RoPE (Su et al. 2021) encodes a token's position by rotating its query and key vectors: pairs of dimensions
(i, i + head_dim/2) - the "rotate-half" layout of Llama and Hugging Face - turn by the angle pos * theta^(-2i/head_dim).
`rope_tables` returns cos and sin of those angles, (max_len, head_dim) each (the half-size angle table repeated twice
along the last dim); `apply_rope` computes x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2, x1] for
x = [x1, x2] split in halves. Why: the dot product of a rotated query at position m and a rotated key at n depends
only on m - n, so attention sees relative positions, and nothing is added to the token embeddings.

中文。RoPE（旋转位置编码，Su et al. 2021）通过旋转 query 和 key 向量来编码位置：维度对 (i, i + head_dim/2)（Llama 与
Hugging Face 的 "rotate-half" 排布）旋转角度 pos * theta^(-2i/head_dim)。`rope_tables` 返回这些角度的 cos 和 sin，
各为 (max_len, head_dim)（半长的角度表沿最后一维重复两次）；`apply_rope` 计算 x * cos + rotate_half(x) * sin，
其中 x = [x1, x2] 按一半切开，rotate_half(x) = [-x2, x1]。为什么：位置 m 的 query 与位置 n 的 key 旋转后的点积只依赖
m - n，注意力因此看到相对位置，而且不需要往词向量里加任何东西。

Check: pytest exercises -k rope        Reference: model.py (rope_tables, apply_rope)
"""


def rope_tables(head_dim, max_len, theta):
    """-> (cos, sin), each (max_len, head_dim) float32."""
    raise NotImplementedError("exercise rope: write rope_tables() (the statement is at the top of the file)")


def apply_rope(x, cos, sin):
    """x (B, heads, T, head_dim); cos, sin broadcast against x ((T, head_dim) or (B, 1, T, head_dim)) -> x's shape."""
    raise NotImplementedError("exercise rope: write apply_rope() (the statement is at the top of the file)")
