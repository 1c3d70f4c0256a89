"""Reference solution of exercise 05 (attention); the statement is in exercises/stubs/attention.py."""
import torch


def attention(q, k, v):
    T, S, hd = q.shape[2], k.shape[2], q.shape[3]
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, n_heads, S, hd)
    scores = q @ k.transpose(-2, -1) / hd ** 0.5                                      # (B, n_heads, T, S)
    query_pos = torch.arange(S - T, S, device=q.device)[:, None]                      # (T, 1)
    visible = torch.arange(S, device=q.device)[None, :] <= query_pos                  # (T, S)
    scores = scores.masked_fill(~visible, float("-inf"))
    return scores.softmax(dim=-1) @ v
