"""Reference solution of exercise 11 (PPO); the statement is in exercises/stubs/ppo.py."""
import torch


def gae(rewards, values, mask, gamma, lam):
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_advantage, next_value = torch.zeros(B), torch.zeros(B)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        # what the token before sees as "next": this token's value and advantage, or 0 past the response's end
        next_advantage, next_value = advantages[:, t], values[:, t] * mask[:, t]
    return advantages, (advantages + values) * mask


def clipped_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange):
    ratio = torch.exp(logprobs - old_logprobs)
    losses = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange))
    return (losses * mask).sum() / mask.sum()
