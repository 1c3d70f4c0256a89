"""Exercise 02 - RMSNorm (plugs into: model.py, RMSNorm, before every attention and MLP block and the output head)

English. RMSNorm (Zhang & Sennrich 2019, used by Llama) rescales each vector to unit root-mean-square and multiplies by
a learned gain: y = x / sqrt(mean(x^2) + eps) * weight, the mean taken over the last dimension. Why: without a norm
the residual stream grows layer by layer and training diverges; unlike LayerNorm it does not subtract the mean, which
is cheaper and works as well.

中文。RMSNorm（均方根归一化，Zhang & Sennrich 2019，Llama 使用）把每个向量缩放到均方根为 1，再乘以可学习的增益：
y = x / sqrt(mean(x^2) + eps) * weight，均值在最后一维上求。为什么：没有归一化，残差流会一层层变大，训练发散；
与 LayerNorm 不同，它不减均值，更省计算，效果相当。

Check: pytest exercises -k rmsnorm        Reference: model.py (RMSNorm, RMSNormFunction)
"""


def rms_norm(x, weight, eps):
    """x (..., dim), weight (dim,) -> (..., dim). Use torch operations only: autograd must reach x and weight."""
    raise NotImplementedError("exercise rmsnorm: write rms_norm() (the statement is at the top of the file)")
