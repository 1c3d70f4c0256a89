"""Exercise 07 - gradient accumulation (plugs into: every stage's loop, the `for micro_step in range(grad_accum)`)

English. A batch too big for memory is split into micro-batches: forward and backward each one, let the gradients
add up in .grad, and step the optimizer once. Each micro-batch's loss is a mean over its own tokens, so it must be
divided by the number of micro-batches: then the summed gradient equals the gradient of the mean loss over the whole
batch, and the result does not depend on how the batch was split. Write `accumulate_gradients`: zero the gradients,
run every micro-batch, and return the mean loss. Why: the batch size is a hyperparameter of the optimisation; gradient
accumulation keeps it while the memory only holds one micro-batch (the `--batch-size` and `--grad-accum` flags).

中文。显存放不下的大批次被切成若干微批次（micro-batch）：每个微批次各做一次前向和反向，梯度在 .grad 中累加，
最后只让优化器走一步。每个微批次的损失是对它自己的 token 取平均，所以要除以微批次的个数：这样累加的梯度才等于
整个批次平均损失的梯度，结果与批次怎样切分无关。请写 `accumulate_gradients`：清零梯度，跑完每个微批次，返回
平均损失。为什么：批次大小是优化的超参数；梯度累积（gradient accumulation）在显存只容得下一个微批次时保持它不变
（对应 `--batch-size` 和 `--grad-accum` 参数）。

Check: pytest exercises -k grad_accum        Reference: train_pretrain.py (the micro-step loop)
"""


def accumulate_gradients(model, micro_batches):
    """model(x, y).loss is the mean cross-entropy of one micro-batch (x, y), each (b, T), all the same size.
    Leave in each parameter's .grad the gradient of the mean loss over all micro-batches; return that loss (a float)."""
    raise NotImplementedError("exercise grad_accum: write accumulate_gradients() (the statement is at the top of the file)")
