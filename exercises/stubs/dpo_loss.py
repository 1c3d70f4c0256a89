"""Exercise 10 - the DPO loss (plugs into: train_dpo.py, dpo_loss)

English. Direct Preference Optimization (Rafailov et al. 2023) trains the policy on preference pairs directly, with no
reward model and no sampling. Its inputs are summed log-probabilities of each response: under the policy being trained
and under a frozen reference (the SFT model). The implicit reward of a response is beta * (log pi(y|x) - log
pi_ref(y|x)); the loss is Bradley-Terry on those rewards: -log sigmoid(beta * h), with
h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected) (eq. 7). Return the per-pair losses and the two
implicit rewards, detached (they are logged, not trained). Why no reward model is needed: the optimal policy of
RLHF's KL-regularised objective can be written in closed form through the reward; turned around, the reward is a
log-ratio of policies, so the preference loss can be put on the policy itself. beta plays the role of the KL penalty.

中文。直接偏好优化（DPO，Rafailov et al. 2023）直接在偏好对上训练策略模型，不需要奖励模型，也不需要采样。输入是每个
回答的对数概率之和：分别在正在训练的策略和冻结的参考模型（SFT 模型）下计算。回答的隐式奖励是
beta * (log pi(y|x) - log pi_ref(y|x))；损失就是这些奖励上的 Bradley-Terry：-log sigmoid(beta * h)，其中
h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)（论文式 7）。返回每对的损失以及两个隐式奖励
（detach，只用于记录，不参与训练）。为什么不需要奖励模型：RLHF 带 KL 正则的目标，其最优策略可以用奖励写成闭式；
反过来，奖励就是两个策略的对数比，于是偏好损失可以直接放在策略上。beta 起到 KL 惩罚系数的作用。

Check: pytest exercises -k dpo_loss        Reference: train_dpo.py (dpo_loss)
"""


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """Four (B,) tensors of summed response log-probs, beta a float -> (losses, chosen_rewards, rejected_rewards), (B,) each."""
    raise NotImplementedError("exercise dpo_loss: write dpo_loss() (the statement is at the top of the file)")
