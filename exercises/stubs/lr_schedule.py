"""Exercise 06 - the learning-rate schedule: linear warmup, then cosine decay (plugs into: every stage's loop,
`lr = tu.get_lr(step, args)`)

English. For the first warmup_steps steps the learning rate rises linearly: step s (counting from 0) uses
lr * (s + 1) / warmup_steps. Then it follows half a cosine from lr down to min_lr, reached at step decay_steps:
min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr), progress = (s - warmup_steps) / (decay_steps - warmup_steps).
From decay_steps on it stays at min_lr. Why: at the start Adam's moment estimates are noise and large updates can
wreck a freshly initialised network, so the steps start small; the slow decay at the end lets the weights settle
into a minimum instead of bouncing around it (nanoGPT, Llama and MiniMind all train this way).

中文。前 warmup_steps 步学习率线性上升：第 s 步（从 0 开始数）用 lr * (s + 1) / warmup_steps。之后沿半个余弦从 lr
降到 min_lr，在第 decay_steps 步到达：min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr)，
progress = (s - warmup_steps) / (decay_steps - warmup_steps)。从 decay_steps 起保持 min_lr。为什么：刚开始时 Adam 的
动量估计只是噪声，大步更新会毁掉刚初始化的网络，所以先走小步（预热，warmup）；最后缓慢衰减让权重落进极小值，
而不是在附近来回跳（nanoGPT、Llama、MiniMind 都这样训练）。

Check: pytest exercises -k lr_schedule        Reference: train_utils.py (get_lr)
"""


def get_lr(step, lr, min_lr, warmup_steps, decay_steps):
    """The learning rate of step `step` (0-based), a float."""
    raise NotImplementedError("exercise lr_schedule: write get_lr() (the statement is at the top of the file)")
