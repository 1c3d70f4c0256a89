"""Exercise 11 - PPO: generalised advantage estimation and the clipped policy loss (plugs into: train_ppo.py, gae and
policy_loss)

English. PPO (Schulman et al. 2017) improves the policy on answers it sampled itself. Two pieces:
1. GAE (Schulman et al. 2016) says, per response token, how much better things went than the value model expected:
   delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, computed backwards over each row.
   mask marks the response tokens (contiguous in a row); past the last response token V and A count as 0, and outside
   the mask the advantages are 0. returns = advantages + values (on the mask; 0 elsewhere): the value model's targets.
2. The clipped surrogate (eq. 7): with ratio r = exp(logprobs - old_logprobs), the per-token loss is
   max(-A * r, -A * clip(r, 1 - eps, 1 + eps)), averaged over the masked tokens.
Why clip: the answers were sampled by the old policy; once the new one moves far from it they say little about it,
and one large step can collapse the policy. Clipping removes the incentive to move a token's probability more than
a factor 1 +- eps per batch, so several epochs over the same rollouts are safe.

中文。PPO（近端策略优化，Schulman et al. 2017）在策略自己采样的回答上改进策略。两部分：
1. GAE（广义优势估计，Schulman et al. 2016）对每个回答 token 给出"结果比价值模型预期好多少"：
   delta_t = r_t + gamma * V_{t+1} - V_t，A_t = delta_t + gamma * lam * A_{t+1}，在每一行上从后往前算。mask 标出回答的
   token（每行中连续）；最后一个回答 token 之后 V 和 A 都按 0 计，掩码以外优势为 0。returns = advantages + values
   （掩码内；其余为 0）：价值模型的训练目标。
2. 截断的替代目标（论文式 7）：比率 r = exp(logprobs - old_logprobs)，每个 token 的损失是
   max(-A * r, -A * clip(r, 1 - eps, 1 + eps))，在掩码内的 token 上取平均。
为什么要截断（clip）：回答是旧策略采样的；新策略离它一远，这些样本就说明不了多少，一大步更新可能让策略崩溃。截断
让每批数据里把某个 token 的概率改变超过 1 +- eps 倍不再有好处，于是同一批 rollout 可以安全地训练好几轮。

Check: pytest exercises -k ppo        Reference: train_ppo.py (gae, policy_loss)
"""


def gae(rewards, values, mask, gamma, lam):
    """rewards, values, mask: (B, T) float tensors -> (advantages, returns), (B, T) each."""
    raise NotImplementedError("exercise ppo: write gae() (the statement is at the top of the file)")


def clipped_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange):
    """(B, T) each (old_logprobs and advantages are constants) -> the scalar loss: mean over the masked tokens."""
    raise NotImplementedError("exercise ppo: write clipped_policy_loss() (the statement is at the top of the file)")
