"""Reference solution of exercise 04 (RoPE); the statement is in exercises/stubs/rope.py."""
import torch


def rope_tables(head_dim, max_len, theta):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (head_dim/2,)
    angles = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq[None, :]      # (max_len, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)                                           # (max_len, head_dim)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
