"""Exercise 03 - SwiGLU (plugs into: model.py, SwiGLU, the MLP of every block)

English. The MLP of Llama-style models is a gated linear unit (Shazeer 2020): two projections of x, one passed
through SiLU (x * sigmoid(x)) and used as a gate on the other, then a projection back:
down( silu(x W_gate^T) * (x W_up^T) ). Weights are stored as nn.Linear stores them: (out_features, in_features).
Why: the gate lets each hidden unit switch itself on per token; at equal parameters (hidden = 8/3 * dim, three
matrices) it trains to a lower loss than the 4 * dim GELU MLP of GPT-2.

中文。Llama 类模型的 MLP 是门控线性单元 SwiGLU（Shazeer 2020）：x 做两次投影，其中一个经过 SiLU（x * sigmoid(x)）
作为"门"去乘另一个，再投影回去：down( silu(x W_gate^T) * (x W_up^T) )。权重按 nn.Linear 的方式存放：
(out_features, in_features)。为什么：门让每个隐藏单元按 token 决定是否打开；参数量相同时（隐藏层 8/3 * dim、
三个矩阵）比 GPT-2 的 4 * dim GELU MLP 训练得到更低的损失。

Check: pytest exercises -k swiglu        Reference: model.py (SwiGLU)
"""


def swiglu(x, w_gate, w_up, w_down):
    """x (..., dim); w_gate, w_up (hidden, dim); w_down (dim, hidden) -> (..., dim)."""
    raise NotImplementedError("exercise swiglu: write swiglu() (the statement is at the top of the file)")
