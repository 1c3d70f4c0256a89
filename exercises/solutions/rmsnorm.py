"""Reference solution of exercise 02 (RMSNorm); the statement is in exercises/stubs/rmsnorm.py."""
import torch


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
