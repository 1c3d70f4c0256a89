"""Exercise 13 - LoRA: the low-rank forward and the merge (plugs into: model.py, LoRALinear; train_sft.py --lora-rank)

English. LoRA (Hu et al. 2021) fine-tunes a frozen weight W (out, in) by learning a low-rank update: two small
matrices A (rank, in) and B (out, rank), and y = x W^T + scale * (x A^T) B^T with scale = alpha / rank. B starts at
zero, so training starts from exactly the base model. After training the update can be folded into the weight:
W' = W + scale * B A, a plain Linear with the same outputs and no extra cost at inference. Compute the forward as
two thin matmuls (x A^T, then B^T): never form B A, an (out, in) matrix, in the forward. Why: only A and B are trained
- for rank 8 on a 512 x 512 weight that is 3% of its parameters - so the optimizer state and the saved adapter are
small, and one base model can carry many adapters.

中文。LoRA（低秩适配，Hu et al. 2021）冻结权重 W (out, in)，只学一个低秩更新：两个小矩阵 A (rank, in) 和
B (out, rank)，y = x W^T + scale * (x A^T) B^T，scale = alpha / rank。B 初始为零，所以训练恰好从基座模型出发。
训练后可以把更新合并进权重：W' = W + scale * B A，得到一个普通的 Linear，输出不变，推理时没有额外开销。前向要写成
两次"瘦"矩阵乘（先 x A^T，再乘 B^T）：前向里不要构造 (out, in) 大小的 B A。为什么：只训练 A 和 B——rank 8、
512 x 512 的权重只占 3% 的参数——优化器状态和保存的适配器都很小，一个基座模型可以挂很多个适配器。

Check: pytest exercises -k lora        Reference: model.py (LoRALinear.forward, LoRALinear.merged)
"""


def lora_forward(x, weight, A, B, scale):
    """x (..., in), weight (out, in), A (rank, in), B (out, rank), scale a float -> (..., out)."""
    raise NotImplementedError("exercise lora: write lora_forward() (the statement is at the top of the file)")


def lora_merge(weight, A, B, scale):
    """-> the merged weight (out, in): weight + scale * B A."""
    raise NotImplementedError("exercise lora: write lora_merge() (the statement is at the top of the file)")
