"""Reference solution of exercise 12 (GRPO advantages); the statement is in exercises/stubs/grpo.py."""


def group_advantages(rewards, group_size, scale=True):
    grouped = rewards.view(-1, group_size)                        # (P, G)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + 1e-4)
    return advantages.view(-1)
