"""Reference solution of exercise 06 (the lr schedule); the statement is in exercises/stubs/lr_schedule.py."""
import math


def get_lr(step, lr, min_lr, warmup_steps, decay_steps):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)
