"""Exercise 09 - the reward model's Bradley-Terry loss (plugs into: train_reward.py, reward_loss)

English. A reward model reads a prompt and a response and outputs one number. It is trained on pairs where people
preferred one response (chosen) to another (rejected). Bradley-Terry says P(chosen beats rejected) =
sigmoid(r_chosen - r_rejected); the loss is its negative log-likelihood, -log sigmoid(r_chosen - r_rejected - margin)
per pair (Ouyang et al. 2022, eq. 1; the optional margin is Llama 2's: how much better the chosen one was rated).
Why a reward model at all: people can say which of two answers is better far more reliably than they can write a
perfect answer; the reward model turns those comparisons into a score that PPO can optimise. Use F.logsigmoid, not
log(sigmoid(...)): for a large negative difference sigmoid underflows to 0 and log(0) is -inf.

中文。奖励模型（reward model）读入提示和回答，输出一个数。它在成对数据上训练：人们认为其中一个回答（chosen）比另一个
（rejected）好。Bradley-Terry 模型认为 P(chosen 胜过 rejected) = sigmoid(r_chosen - r_rejected)；损失是它的负对数似然，
每对为 -log sigmoid(r_chosen - r_rejected - margin)（Ouyang et al. 2022 式 1；可选的 margin 来自 Llama 2：chosen 被评得
好多少）。为什么需要奖励模型：人判断两个回答哪个更好，远比亲手写出完美回答可靠；奖励模型把这些比较变成 PPO 可以
优化的分数。请用 F.logsigmoid，而不是 log(sigmoid(...))：差值很负时 sigmoid 下溢为 0，log(0) 是 -inf。

Check: pytest exercises -k reward_loss        Reference: train_reward.py (reward_loss)
"""


def reward_loss(chosen_rewards, rejected_rewards, margin=0.0):
    """chosen_rewards, rejected_rewards (B,) -> per-pair losses (B,)."""
    raise NotImplementedError("exercise reward_loss: write reward_loss() (the statement is at the top of the file)")
