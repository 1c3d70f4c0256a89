"""Exercise 12 - GRPO's group advantages (plugs into: train_grpo.py, group_advantages)

English. GRPO (Shao et al. 2024, DeepSeekMath) samples G answers to each prompt, scores each with a checkable reward
(here: is the arithmetic right?), and uses the group as its own baseline: an answer's advantage is its reward minus
the mean reward of its group, divided by the group's standard deviation (unbiased, as torch.std; add 1e-4 so a group
where every answer got the same reward gives 0, not 0/0). With scale=False skip the division (Dr. GRPO: the std
weights easy and hard prompts unequally). The rewards arrive flat, (P * G,), the G answers of a prompt consecutive.
Why no critic: PPO learns a value model as large as the policy to predict the expected reward; GRPO estimates that
expectation by sampling several answers to the same prompt - cheaper in memory, and exact enough when rewards are 0/1.

中文。GRPO（组相对策略优化，Shao et al. 2024，DeepSeekMath）对每个提示采样 G 个回答，用可验证的奖励打分（这里：
算术对不对），并把这一组当作自己的基线：一个回答的优势（advantage）是它的奖励减去所在组的平均奖励，再除以组的
标准差（无偏，与 torch.std 相同；加 1e-4，使所有回答奖励相同的组得到 0 而不是 0/0）。scale=False 时不做除法
（Dr. GRPO：标准差会让简单题和难题的权重不相等）。奖励是扁平的 (P * G,)，同一提示的 G 个回答相邻。
为什么不需要评论家（critic）：PPO 要学一个和策略一样大的价值模型来预测期望奖励；GRPO 用同一提示的多个回答来估计
这个期望——更省显存，奖励是 0/1 时也足够准确。

Check: pytest exercises -k grpo        Reference: train_grpo.py (group_advantages)
"""


def group_advantages(rewards, group_size, scale=True):
    """rewards (P * group_size,) -> advantages (P * group_size,)."""
    raise NotImplementedError("exercise grpo: write group_advantages() (the statement is at the top of the file)")
