"""
MiniGPT: a Llama-style decoder-only transformer, small enough to read in one sitting.

    tokens -> embedding -> n_layers x [RMSNorm -> attention (RoPE, GQA) -> +residual,
                                       RMSNorm -> SwiGLU MLP or MoE      -> +residual]
           -> RMSNorm -> lm_head (tied to the embedding) -> logits

Weight layout and the RoPE convention (rotate-half) are those of Hugging Face's
LlamaForCausalLM, so export_hf.py maps weights one to one; we only fuse q/k/v into one
matmul and gate/up into another, which is one of the reasons we train faster than it.
"""
import contextlib
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass
class MiniGPTConfig:
    vocab_size: int = 6400
    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int = 2             # GQA: == n_heads is multi-head, 1 is multi-query
    ffn_hidden: Optional[int] = None  # SwiGLU hidden size; None -> ~8/3 * dim rounded up to 64
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0            # on the embeddings and each residual branch's output
    attn_dropout: float = 0.0       # on the attention probabilities: (B, heads, T, T) masks doubled a CPU step's time
    tie_embeddings: bool = True
    n_experts: int = 0              # 0 = dense MLP; >0 = mixture of experts in every layer
    experts_per_token: int = 2      # top-k routing
    aux_loss_coef: float = 0.01     # weight of the load-balancing loss
    gradient_checkpointing: bool = False

    def __post_init__(self):
        if self.ffn_hidden is None:  # SwiGLU has 3 matrices, so 8/3*dim keeps the 4*dim MLP's parameter count
            self.ffn_hidden = 64 * math.ceil(int(8 * self.dim / 3) / 64)
        small = [n for n in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "max_seq_len") if getattr(self, n) < 1]
        if small:
            raise ValueError(f"config: {', '.join(small)} must be at least 1")
        if not (0 <= self.dropout < 1 and 0 <= self.attn_dropout < 1):
            raise ValueError(f"config: dropout ({self.dropout}) and attn_dropout ({self.attn_dropout}) must be in [0, 1)")
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"config: dim ({self.dim}) must divide by n_heads ({self.n_heads}) "
                             f"and n_heads by n_kv_heads ({self.n_kv_heads})")
        if self.n_experts and not 1 <= self.experts_per_token <= self.n_experts:
            raise ValueError(f"config: experts_per_token ({self.experts_per_token}) must be in 1..n_experts ({self.n_experts})")

    @property
    def head_dim(self):
        return self.dim // self.n_heads

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model config: unknown fields {unknown}")
        for name, value in d.items():
            default = cls.__dataclass_fields__[name].default
            if not _fits_field(value, default):
                expected = "int or null" if default is None else type(default).__name__
                raise ValueError(f"model config: field '{name}' should be {expected}, got {value!r}")
        return cls(**d)


def _fits_field(value, default):
    """Does a config.json value fit a field with this default? Each field holds its default's type; an int is a
    fine float, a bool is not an int, and null (ffn_hidden's default) means "derive it"."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if default is None:
        return value is None or isinstance(value, int)
    return isinstance(value, (int, float) if isinstance(default, float) else int)


# Presets: one name sets the size. Parameter counts (printed by `python model.py`) are in the README.
PRESETS = {
    "tiny":   dict(vocab_size=2048, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, max_seq_len=256),
    "small":  dict(vocab_size=6400, dim=512, n_layers=8, n_heads=8, n_kv_heads=2, max_seq_len=512),  # ~MiniMind2-small
    "medium": dict(vocab_size=6400, dim=768, n_layers=16, n_heads=12, n_kv_heads=4, max_seq_len=1024),
    "deep":   dict(vocab_size=6400, dim=256, n_layers=24, n_heads=8, n_kv_heads=2, max_seq_len=512),  # deep-narrow, MobileLLM-style
}
for _name in list(PRESETS):
    PRESETS[f"{_name}-moe"] = dict(PRESETS[_name], n_experts=4, experts_per_token=2)


def get_config(name, **overrides):
    """A preset by name, with any field overridden: get_config('small', vocab_size=4096)."""
    if name not in PRESETS:
        raise ValueError(f"unknown config '{name}'; choose one of {', '.join(PRESETS)}")
    return MiniGPTConfig(**{**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------- building blocks

class RMSNormFunction(torch.autograd.Function):
    """y = x * r * w with r = 1/sqrt(mean(x^2) + eps), and its gradient written out: on CPU autograd's version of
    F.rms_norm runs ~12 elementwise passes backward, this one 6 (3.5 -> 2.5 ms forward+backward at 8 x 256 x 512)."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        ctx.save_for_backward(x, weight, r)
        return x * r * weight

    @staticmethod
    def backward(ctx, grad):
        x, weight, r = ctx.saved_tensors
        x_hat, grad_w = x * r, grad * weight
        weight_grad = (grad * x_hat).sum(dim=tuple(range(grad.dim() - 1)))
        # dx = r * (g*w - x_hat * mean(g*w * x_hat)): the second term is r's own dependence on x
        x_grad = torch.addcmul(grad_w, x_hat, (grad_w * x_hat).mean(-1, keepdim=True), value=-1).mul_(r)
        return x_grad, weight_grad, None


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # normalise in fp32 (as Llama does) so bf16 autocast does not lose precision in the mean of squares
        if not torch.is_grad_enabled():  # generation: the same arithmetic without the autograd.Function's overhead
            return F.rms_norm(x.float(), x.shape[-1:], self.weight.float(), self.eps).type_as(x)
        return RMSNormFunction.apply(x.float(), self.weight.float(), self.eps).type_as(x)


def rope_tables(head_dim, max_len, theta):
    """cos/sin tables (max_len, head_dim) for rotate-half RoPE: dims i and i+head_dim/2 rotate together."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (T, hd/2)
    angles = torch.cat([angles, angles], dim=-1)                                # (T, hd)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    # x: (B, nh, T, hd); cos/sin: (T, hd) or (B, 1, T, hd)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin


def grouped_attention(q, k, v, causal=True, dropout_p=0.0, key_mask=None):
    """Attention as two batched matmuls, the g query heads of each kv head stacked along time so they share K and V
    without copying them; for causal, scale and mask are folded into the first matmul (baddbmm). On CPU this is
    ~2x faster than SDPA's flash kernel for bf16 training at T <= 512 and for one-token decode steps
    (bench/bench_model.py); it materialises the (T, S) scores. causal=False: every key is visible (decoding), except
    where key_mask (B, 1, 1, S), True = visible, hides a left-padded batch's padding (one query per row)."""
    B, n_heads, T, hd = q.shape
    n_kv, S = k.shape[1], k.shape[2]
    g = n_heads // n_kv
    q3, k3 = q.reshape(B * n_kv, g * T, hd), k.reshape(B * n_kv, S, hd).transpose(1, 2)
    # one query under torch.compile: both products as multiply-and-sum in fp32, which the compiler fuses (see Linear)
    fused = torch.compiler.is_compiling() and T == 1 and not causal
    if causal:  # query t sees the keys up to S - T + t: those cached before the T queries, and itself
        mask = torch.full((T, S), float("-inf"), device=q.device).triu(S - T + 1).repeat(g, 1).to(q.dtype)  # 0 or -inf
        scores = torch.baddbmm(mask, q3, k3, alpha=hd ** -0.5)  # (B*nkv, g*T, S)
    else:
        if fused:
            scores = (q3.float().unsqueeze(2) * k.float().reshape(B * n_kv, 1, S, hd)).sum(-1) * hd ** -0.5
        else:
            scores = torch.bmm(q3, k3) * hd ** -0.5
        if key_mask is not None:  # (B, 1, 1, S) -> (B * n_kv, 1, S), the same for the g heads of a kv head
            scores = scores.masked_fill(~key_mask.reshape(B, 1, S).expand(B, n_kv, S).reshape(B * n_kv, 1, S), float("-inf"))
    probs = F.dropout(scores.softmax(-1), dropout_p) if dropout_p else scores.softmax(-1)  # fp32 accumulation inside
    if fused:
        out = (probs.unsqueeze(-1) * v.float().reshape(B * n_kv, 1, S, hd)).sum(-2)
        return out.to(q.dtype).reshape(B, n_heads, T, hd)
    return torch.bmm(probs, v.reshape(B * n_kv, S, hd)).reshape(B, n_heads, T, hd)


class KVCache:
    """Preallocated keys/values for incremental decoding: prefill the prompt once, then one token a step.

    pad_lens (B,) counts the left padding of each row, so prompts of different lengths share one batch.
    """

    def __init__(self, config, batch_size, max_len, device, dtype, pad_lens=None):
        shape = (batch_size, config.n_kv_heads, max_len, config.head_dim)
        # one tensor per layer: writing a layer's new keys into one (layers, ...) tensor made torch.compile copy the
        # whole cache at every layer of every step (functionalised writes it could not do in place)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.pos = 0  # how many positions are filled
        self.max_len = max_len
        self.pad_lens = pad_lens if pad_lens is not None and bool(pad_lens.any()) else None

    def reorder(self, index):
        """Keep rows `index`, in that order, any row any number of times (beam search reorders beams after each step;
        rows with the same prompt get copies of its one prefill)."""
        self.k = [k[index] for k in self.k]
        self.v = [v[index] for v in self.v]
        if self.pad_lens is not None:
            self.pad_lens = self.pad_lens[index]


class Int8Linear(nn.Module):
    """A Linear for decoding whose weight is stored as int8 with one scale per output row (weight-only quantization,
    as in gpt-fast). A batch-1 decode step reads every weight once, so its speed is bytes: the small preset's 26 MB
    of int8 weights fit this CPU's 32 MB L3 cache, where bf16's 52 MB stream from memory (~4x faster matmuls)."""

    def __init__(self, weight):
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # (out,): each row's largest |weight| maps to 127
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).to(torch.int8))  # (out, in)
        self.register_buffer("scale", scale)  # a float buffer: model.to(bf16) casts it with the activations

    def forward(self, x):  # (..., in) -> (..., out)
        x2d = x.reshape(-1, x.shape[-1])
        if x.device.type == "cpu":  # one kernel that dequantises as it multiplies (fast for bf16 activations)
            y = torch._weight_int8pack_mm(x2d, self.weight_int8, self.scale)
        else:  # elsewhere dequantise first: right, not fast
            y = F.linear(x2d, self.weight_int8.to(x.dtype)) * self.scale
        return y.reshape(*x.shape[:-1], -1)


def quantize_int8(model):
    """Replace every nn.Linear of a model by an Int8Linear, in place, for generation only (int8 weights take no
    gradient). The embedding table stays as it is (a lookup reads one row); a tied lm_head gets its own int8 copy."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child.weight).to(child.weight.device))
    return model


class Linear(nn.Linear):
    """nn.Linear (same weights, same state dict) that inside torch.compile multiplies a single row (a batch-1 decode
    step) as multiply-and-sum: the compiler fuses that into one pass over the weight, where MKL's one-row GEMV reads
    it at about half the speed (the small preset's 33 matrices alone on a Zen 4: fp32 17 -> 37 GB/s, bf16 24 -> 33)."""

    def forward(self, x):
        if torch.compiler.is_compiling() and x.numel() == x.shape[-1] and self.bias is None:
            return (x.float().unsqueeze(-2) * self.weight.float()).sum(-1).to(x.dtype)  # fp32 sums, as F.linear's
        return F.linear(x, self.weight, self.bias)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        # one matmul for q, k and v (rows: n_heads q heads, then n_kv_heads k heads, then v heads)
        self.qkv = Linear(cfg.dim, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False)
        self.proj = Linear(cfg.dim, cfg.dim, bias=False)
        self.dropout = cfg.attn_dropout

    def forward(self, x, cos, sin, cache=None, layer=0, attn_mask=None, position=None):
        B, T, _ = x.shape
        n_qk = self.n_heads + self.n_kv_heads
        qkv = self.qkv(x).unflatten(-1, (n_qk + self.n_kv_heads, self.head_dim)).transpose(1, 2)  # (B, nh+2nkv, T, hd)
        # split, not slicing: a slice's backward zero-fills the whole tensor and then copies into it (~2% of a step)
        qk, v = qkv.split([n_qk, self.n_kv_heads], dim=1)
        q, k = apply_rope(qk, cos, sin).split([self.n_heads, self.n_kv_heads], dim=1)  # RoPE on q and k in one pass
        if cache is not None and position is not None:  # decode_step: write at a position tensor, read the first S slots
            cache.k[layer].index_copy_(2, position, k.to(cache.k[layer].dtype))
            cache.v[layer].index_copy_(2, position, v.to(cache.v[layer].dtype))
            S = attn_mask.shape[-1]  # decode_step's key mask covers the slots it reads
            k, v = cache.k[layer][:, :, :S], cache.v[layer][:, :, :S]
        elif cache is not None:
            start = cache.pos
            cache.k[layer][:, :, start:start + T] = k
            cache.v[layer][:, :, start:start + T] = v
            k, v = cache.k[layer][:, :, :start + T], cache.v[layer][:, :, :start + T]
        # a chunk after cached keys (no left padding): causal, every cached key visible, so the mask forward_hidden
        # made is the causal one shifted by the cached length, which grouped_attention draws itself
        chunk = cache is not None and position is None and cache.pad_lens is None and T > 1
        if q.device.type == "cpu" and q.dtype != torch.float32 and T <= 512 and (attn_mask is None and cache is None or chunk):
            y = grouped_attention(q, k.to(q.dtype), v.to(q.dtype), causal=True,
                                  dropout_p=self.dropout if self.training else 0.0)
        elif q.device.type == "cpu" and cache is not None and T == 1:  # a decode step: the new token sees the cache
            # in the cache's dtype: generate.py keeps it fp32 when eager on CPU, where a one-query bf16 bmm costs ~14 us,
            # fp32 ~3 (its compiled step fuses the products, so there the cache stays in the keys' dtype);
            # a left-padded batch's mask goes in too (through SDPA, with the cache cast to bf16 each step, GRPO's
            # 64-row sampling spent 60% of its time here)
            y = grouped_attention(q.to(k.dtype), k, v, causal=False, key_mask=attn_mask).to(q.dtype)
        else:
            k, v = k.to(q.dtype), v.to(q.dtype)  # no-op unless the cache's dtype differs from the model's
            # causal without a mask (forward_hidden passes one whenever cached keys precede these T queries); written
            # as an if so that torch.compile(dynamic=True), where T is symbolic, passes SDPA a plain bool
            is_causal = True if attn_mask is None and T > 1 else False
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                               dropout_p=self.dropout if self.training else 0.0,
                                               enable_gqa=self.n_kv_heads != self.n_heads)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, dim)


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.gate_up = Linear(dim, 2 * hidden, bias=False)  # gate and up projections in one matmul
        self.down = Linear(hidden, dim, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class MoE(nn.Module):
    """Top-k mixture of SwiGLU experts (Mixtral routing: softmax over all experts, keep top-k, renormalise)."""

    def __init__(self, cfg):
        super().__init__()
        self.n_experts, self.top_k, self.aux_loss_coef = cfg.n_experts, cfg.experts_per_token, cfg.aux_loss_coef
        self.router = nn.Linear(cfg.dim, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.dim, cfg.ffn_hidden) for _ in range(cfg.n_experts))

    def forward(self, x):
        B, T, D = x.shape
        x = x.reshape(-1, D)                                                  # (N, D)
        probs = F.softmax(self.router(x).float(), dim=-1)                     # (N, E)
        top_p, top_e = probs.topk(self.top_k, dim=-1)                         # (N, k)
        top_p = (top_p / top_p.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token_idx, slot = (top_e == e).nonzero(as_tuple=True)            # tokens routed to expert e
            if token_idx.numel():
                y = expert(x[token_idx]) * top_p[token_idx, slot, None]
                out.index_add_(0, token_idx, y.to(out.dtype))
        aux = x.new_zeros(())
        if self.training and self.aux_loss_coef > 0:
            # Switch-Transformer balance loss: E * sum_e (fraction of routings to e) * (mean router prob of e)
            frac = F.one_hot(top_e, self.n_experts).float().mean(dim=(0, 1))
            aux = self.aux_loss_coef * self.n_experts * (frac * probs.mean(0)).sum()
        return out.view(B, T, D), aux


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MoE(cfg) if cfg.n_experts else SwiGLU(cfg.dim, cfg.ffn_hidden)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, cache=None, layer=0, attn_mask=None, position=None):
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, cache, layer, attn_mask, position))
        h = self.mlp(self.mlp_norm(x))
        h, aux = h if isinstance(h, tuple) else (h, x.new_zeros(()))
        return x + self.dropout(h), aux


class CrossEntropyFunction(torch.autograd.Function):
    """Mean -log softmax(logits)[target] over targets != -100, with the gradient softmax - onehot written out:
    exp and scale over the (B, T, vocab) log-probs instead of autograd's zero-fill, scatter and log-softmax backward."""

    @staticmethod
    def forward(ctx, logits, targets):
        logprobs = F.log_softmax(logits, dim=-1)
        valid = targets != -100
        index = targets.clamp(min=0).unsqueeze(-1)
        count = valid.sum().clamp(min=1)
        ctx.save_for_backward(logprobs, index, valid, count)
        nll = -logprobs.gather(-1, index).squeeze(-1).float()  # (B, T)
        return (nll * valid).sum() / count

    @staticmethod
    def backward(ctx, grad):
        logprobs, index, valid, count = ctx.saved_tensors
        scale = (grad * valid / count).unsqueeze(-1).to(logprobs.dtype)  # (B, T, 1): 0 where there is no loss
        logits_grad = logprobs.exp().mul_(scale)                        # softmax ...
        rows = logits_grad.view(-1, logits_grad.size(-1))               # (B*T, V)
        # ... minus one at the target; by indexing, as scatter_add_ copies the whole (B, T, V) tensor on CPU (~12 ms)
        rows[torch.arange(rows.size(0), device=rows.device), index.view(-1)] -= scale.view(-1)
        return logits_grad, None


def cross_entropy(logits, targets):
    """Mean next-token loss over targets != -100. Under bf16 autocast the log-softmax stays in bf16 (its kernel
    accumulates in fp32) and only the mean is fp32: 4x less memory traffic than upcasting the (B, T, vocab) logits,
    ~5% of a small-model training step on CPU; per-token rounding (~0.4%) averages out in the mean."""
    return CrossEntropyFunction.apply(logits if logits.dtype == torch.bfloat16 else logits.float(), targets)


def token_logprobs(logits, targets):
    """log p(target) at every position, (B, T), in fp32: the target's logit minus the log-sum-exp over the vocab
    (never materialises the (B, T, V) log-softmax). DPO, the reward model and PPO all score sequences with it."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def answer_logprobs(model, x, y, mask):
    """RL's scoring of sampled answers: (log p(y) where mask is 1, zero elsewhere (B, T) fp32; the logits there (n, V)).
    The same numbers as token_logprobs(model(x).logits, y) * mask, for less work: the model reads x only up to the last
    answer token (a batch is padded to its longest row) and its lm_head sees only the answer positions (a 32-row
    micro-batch of GRPO's think chain, prompt ~28 and answers ~105 tokens: 100-129 -> 78-80 ms on a Zen 4), and a prefix
    every row shares runs once (a 32-row micro-batch of the tool chain's shape, 100 of ~180 tokens shared: 223-248 -> 122-129
    ms, 2 threads)."""
    keep = mask.bool()
    width = int(keep.any(0).nonzero().max()) + 1 if keep.any() else 1  # columns after the last answer token: padding
    x, scored = x[:, :width], keep[:, :width]
    shared = shared_prefix_length(x, scored) if isinstance(model, MiniGPT) else 0  # not through DDP or a compiled model
    if shared >= SHARED_PREFIX_MIN:  # the prefix's keys and values once, with gradient, copied to every row
        cache = KVCache(model.config, 1, width, x.device, compute_dtype(model.embed.weight))
        model.forward_hidden(x[:1, :shared], cache)  # fills the cache; its outputs score nothing
        cache.reorder(torch.zeros(len(x), dtype=torch.long, device=x.device))
        logits = model(x[:, shared:], cache=cache, logits_mask=scored[:, shared:]).logits
    else:
        logits = model(x, logits_mask=scored).logits  # (n, V), the answer positions in row-major order
    return torch.zeros_like(mask, dtype=torch.float32).masked_scatter(keep, token_logprobs(logits, y[keep])), logits


# A prefix every row shares (the tool chain's tool list: ~91 of its 214-255 tokens a row) is computed once when it is
# this long; shorter ones (a chat template's first tokens) are not worth a second forward call.
SHARED_PREFIX_MIN = 32


def shared_prefix_length(x, keep):
    """How many leading columns of x (B, T) every row has alike, none of them scored (keep (B, T) bool)."""
    same = (x == x[:1]).all(0) & ~keep.any(0)
    return int(same.cumprod(0).sum()) if len(x) > 1 else 0


def entropy_from_logits(logits):
    """Entropy of each position's next-token distribution, (B, T) (PPO and GRPO log it)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def masked_mean(x, mask):
    """Mean of x over the positions where mask is 1 (the response tokens of RL losses)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def compute_dtype(x):
    """The dtype the matmuls run in: autocast's where it is on, else x's."""
    on = torch.is_autocast_enabled(x.device.type)
    return torch.get_autocast_dtype(x.device.type) if on else x.dtype


class ModelOutput(NamedTuple):
    logits: torch.Tensor             # (B, T, vocab), (B, 1, vocab) with last_logits_only, (n, vocab) with logits_mask
    loss: Optional[torch.Tensor]     # mean next-token cross-entropy over positions that carry loss
    aux_loss: torch.Tensor           # MoE load-balancing loss, already scaled by aux_loss_coef (0 when dense)


class MiniGPT(nn.Module):
    def __init__(self, config: MiniGPTConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # scaled residual init (GPT-2): each residual branch's output projection gets std / sqrt(2 * n_layers)
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def forward_hidden(self, idx, cache=None):
        """Final normalised hidden states (B, T, dim) and the summed MoE aux loss."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len {self.config.max_seq_len}")
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        attn_mask = None
        if cache is not None and cache.pad_lens is not None:
            # left-padded batch: row b's real tokens start at pad_lens[b]; positions count from there
            q_pos = torch.arange(start, start + T, device=idx.device)
            k_pos = torch.arange(start + T, device=idx.device)
            pad = cache.pad_lens.to(idx.device)[:, None]
            pos = (q_pos[None, :] - pad).clamp(min=0)                            # (B, T)
            cos, sin = self.rope_cos[pos][:, None], self.rope_sin[pos][:, None]  # (B, 1, T, hd)
            attn_mask = (k_pos[None, None, :] <= q_pos[None, :, None]) & (k_pos[None, None, :] >= pad[:, :, None])
            attn_mask = attn_mask[:, None]                                       # (B, 1, T, S)
        elif cache is not None and start > 0 and T > 1:  # chunked prefill: causal within the chunk, all before
            q_pos = torch.arange(start, start + T, device=idx.device)
            attn_mask = torch.arange(start + T, device=idx.device)[None, :] <= q_pos[:, None]
        x = self.dropout(self.embed(idx))  # (B, T, dim)
        dtype = compute_dtype(x)
        cos, sin = cos.to(dtype), sin.to(dtype)  # RoPE in q/k's dtype
        aux_total = x.new_zeros(())
        for i, layer in enumerate(self.layers):
            if self.config.gradient_checkpointing and self.training and cache is None:
                x, aux = checkpoint(layer, x, cos, sin, None, i, attn_mask, use_reentrant=False)
            else:
                x, aux = layer(x, cos, sin, cache, i, attn_mask)
            aux_total = aux_total + aux
        if cache is not None:
            cache.pos += T
        return self.norm(x), aux_total

    def decode_step(self, token, cache, position, slots=None):
        """Next-token logits (B, V) for one new token per row, token (B,), at `position` ((1,) long tensor, = cache.pos;
        the caller advances cache.pos). No changing Python number: the keys are written into the cache by index and the
        attention reads the cache's first `slots` ((S,) = arange(S), S > position; default all cache.max_len), the
        unfilled and left-padding ones masked. So torch.compile makes one graph for a whole generation (gpt-fast's static
        cache), with S a symbolic size where the caller marks it dynamic; eager, it gives forward()'s logits."""
        B = token.shape[0]
        pad = cache.pad_lens if cache.pad_lens is not None else torch.zeros(B, dtype=torch.long, device=token.device)
        rope_pos = position - pad                                    # (B,): a row's positions count from its first token
        slots = torch.arange(cache.max_len, device=token.device) if slots is None else slots
        key_mask = ((slots <= position) & (slots >= pad[:, None]))[:, None, None]  # (B, 1, 1, S), True = visible
        x = self.embed(token[:, None])                               # (B, 1, dim)
        dtype = compute_dtype(x)
        cos, sin = self.rope_cos[rope_pos][:, None, None].to(dtype), self.rope_sin[rope_pos][:, None, None].to(dtype)
        for i, layer in enumerate(self.layers):
            x, _ = layer(x, cos, sin, cache, i, key_mask, position)
        return self.lm_head(self.norm(x))[:, -1]

    def forward(self, idx, targets=None, loss_mask=None, cache=None, last_logits_only=False, logits_mask=None):
        """idx, targets, loss_mask: (B, T). A target of -100 or a loss_mask of 0 carries no loss. logits_mask (B, T)
        bool: logits only where it is True, as (n, vocab) in row-major order (RL scores only the answer tokens)."""
        x, aux_loss = self.forward_hidden(idx, cache)
        if last_logits_only:
            x = x[:, -1:, :]  # generation needs only the next token's distribution
        elif logits_mask is not None:
            x = x[logits_mask]  # (n, dim): the lm_head and the vocab-wide softmax run on these positions only
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            if loss_mask is not None:
                targets = targets.masked_fill(loss_mask == 0, -100)
            loss = cross_entropy(logits, targets)
        return ModelOutput(logits, loss, aux_loss)

    def configure_optimizer(self, lr, weight_decay, betas=(0.9, 0.95), device_type="cpu"):
        """AdamW with weight decay on matrices only (not norms), fused kernel where this torch has one."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
        except (RuntimeError, TypeError):  # no fused kernel for this device/dtype
            return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


class ValueOutput(NamedTuple):
    values: torch.Tensor                     # (B, T), fp32
    aux_loss: torch.Tensor                   # MoE load balancing (0 without experts)
    reply_logprobs: Optional[torch.Tensor]   # (B, T-1) with a likelihood term, else None


class ValueModel(nn.Module):
    """A MiniGPT backbone with a scalar head instead of next-token logits: one value per position, (B, T).
    The reward model reads it at the last real token of prompt+response; PPO's critic at every response token."""

    def __init__(self, config: MiniGPTConfig, likelihood=False):
        super().__init__()
        self.config = config
        self.backbone = MiniGPT(config)
        if not config.tie_embeddings and not likelihood:
            self.backbone.lm_head.weight.requires_grad_(False)  # unused by the head: out of the optimizer and DDP
        self.head = nn.Linear(config.dim, 1)
        nn.init.normal_(self.head.weight, std=1 / math.sqrt(config.dim + 1))  # unit-scale outputs at init
        nn.init.zeros_(self.head.bias)
        # a reward model trained with --likelihood adds likelihood_weight x the reply's log-likelihood under the
        # backbone's own language model, which knows the facts and names a head on the last token cannot read out
        # (held-out wrong facts: the head alone judged 56 of 115 right, the head with the likelihood 112)
        self.likelihood_weight = nn.Parameter(torch.ones(())) if likelihood else None

    configure_optimizer = MiniGPT.configure_optimizer
    num_params = MiniGPT.num_params

    def forward(self, idx, prompt_lengths=None):
        """ValueOutput(values (B, T) in fp32, MoE aux loss, reply_logprobs). With a likelihood term, prompt_lengths
        (B,) says where each reply starts, and values[b, t] adds likelihood_weight x the log-likelihood of the reply's
        tokens up to t: read at the last token (values_at_last_token), it is the whole reply's. The prompt's own
        likelihood is left out, as it is the same for every reply to it. reply_logprobs (B, T-1): log p(idx[:, t+1])
        from the reply's first token on (0 before it; None without the term), for train_reward.py's NLL."""
        hidden, aux_loss = self.backbone.forward_hidden(idx)
        # the scalar head in fp32 even under autocast: bf16 rounds a reward of ~10 by up to 0.03, as much as the
        # gap between a right and a wrong fact (3 reward models, held-out accuracy 0.859/0.915/0.887 -> 0.873/0.915/0.908)
        with torch.autocast(idx.device.type, enabled=False):
            values = self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()  # fp32 unless cast to bf16
        if self.likelihood_weight is None:
            return ValueOutput(values, aux_loss, None)
        if prompt_lengths is None:
            raise ValueError("a reward model with a likelihood term needs prompt_lengths: where each reply starts")
        with torch.autocast(idx.device.type, enabled=False):  # fp32 logits, as the head: a reply sums ~10 of them
            logits = self.backbone.lm_head(hidden[:, :-1].to(self.backbone.lm_head.weight.dtype))
        logprobs = token_logprobs(logits, idx[:, 1:])  # (B, T-1): log p(idx[:, t+1])
        in_reply = torch.arange(1, idx.size(1), device=idx.device)[None, :] >= prompt_lengths.to(idx.device)[:, None]
        reply_logprobs = logprobs * in_reply
        reply_logprob = torch.cumsum(reply_logprobs, dim=1)  # (B, T-1): the reply's log-likelihood so far
        return ValueOutput(values + self.likelihood_weight * F.pad(reply_logprob, (1, 0)), aux_loss, reply_logprobs)

    def freeze_backbone(self, trainable_layers=0):
        """Train only the head, the final norm and the top `trainable_layers` blocks."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for layer in self.backbone.layers[len(self.backbone.layers) - trainable_layers:] if trainable_layers else []:
            layer.requires_grad_(True)
        self.backbone.norm.requires_grad_(True)


def values_at_last_token(values, lengths):
    """values (rows, L), lengths (rows,) -> the value at each row's last real token, (rows,): where a reward
    model has read the whole prompt+response."""
    return values[torch.arange(values.size(0), device=values.device), lengths.to(values.device) - 1]


# ----------------------------------------------------------------------------- LoRA

# --lora-targets names -> (the Linear that holds it, relative to a block; its slice of that Linear's output rows).
# q/k/v share our fused qkv and gate/up our fused gate_up, so each gets an adapter of its own on its own rows:
# exactly PEFT's q_proj/k_proj/v_proj/gate_proj/up_proj adapters on Llama, which export_hf.py writes.
LORA_TARGETS = {"q": ("attn.qkv", 0), "k": ("attn.qkv", 1), "v": ("attn.qkv", 2), "o": ("attn.proj", 0),
                "gate": ("mlp.gate_up", 0), "up": ("mlp.gate_up", 1), "down": ("mlp.down", 0)}


class LoRALinear(nn.Module):
    """A frozen Linear plus low-rank updates on some slices of its output (Hu et al. 2021):
    y = W x, then on slice i: y_i += (alpha / rank) * B_i A_i dropout(x), with A_i (rank, in) and B_i (out_i, rank).
    B starts at zero, so training starts from exactly the base model; only the A and B matrices are trained."""

    def __init__(self, base, slices, rank, alpha, dropout):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.sizes = [size for _, size in slices]  # the output rows of each slice, in order: qkv -> q, k, v sizes
        self.names = [name for name, _ in slices]
        self.scale, self.enabled = alpha / rank, True
        self.dropout = nn.Dropout(dropout)
        device = base.weight.device
        self.lora_A = nn.ParameterDict({name: nn.Parameter(torch.empty(rank, base.in_features, device=device))
                                        for name in self.names if name})
        self.lora_B = nn.ParameterDict({name: nn.Parameter(torch.zeros(size, rank, device=device))
                                        for name, size in slices if name})
        for a in self.lora_A.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as PEFT and nn.Linear initialise

    def forward(self, x):
        y = self.base(x)
        if not self.enabled:
            return y
        # every adapter of this Linear as one low-rank product: the A_i stacked (adapters * rank, in) and the B_i
        # block-diagonal (out, adapters * rank), zero rows for slices without one. One addmm adds every update in
        # place of a split, adds and a concatenation, which took ~20% more memory than full fine-tuning (small preset)
        A = torch.cat([self.lora_A[name] for name in self.names if name])
        B = torch.block_diag(*[self.lora_B[name] if name else A.new_zeros(size, 0)
                               for name, size in zip(self.names, self.sizes)]) * self.scale
        h = self.dropout(x).flatten(0, -2) @ A.t()  # (tokens, adapters * rank)
        return torch.addmm(y.flatten(0, -2), h, B.t()).view(y.shape)

    def merged(self):
        """The plain Linear with every update added to its weight: W_i + (alpha / rank) B_i A_i."""
        weight = self.base.weight.detach().clone()
        start = 0
        for name, size in zip(self.names, self.sizes):
            if name:
                weight[start:start + size] += (self.lora_B[name] @ self.lora_A[name]).to(weight.dtype) * self.scale
            start += size
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
        linear.weight = nn.Parameter(weight)
        return linear


def add_lora(model, rank, alpha, dropout=0.0, targets=("q", "k", "v", "o", "gate", "up", "down")):
    """Freeze every weight of a MiniGPT and wrap the targeted Linears of every block in LoRALinear (in place);
    returns the model. Its lora_* parameters are then the only trainable ones. model.lora records the settings and,
    for a model from load_model, the checkpoint it was loaded from: a LoRA checkpoint keeps only the adapters and
    names that base."""
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown:
        raise ValueError(f"--lora-targets: unknown {', '.join(unknown)}; choose from {', '.join(LORA_TARGETS)}")
    cfg = model.config
    if cfg.n_experts and set(targets) & {"gate", "up", "down"}:
        raise ValueError("--lora-targets gate/up/down: a mixture-of-experts model has one MLP per expert; target "
                         "q,k,v,o on it")
    model.requires_grad_(False)
    q, kv, hidden = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_hidden
    rows = {"attn.qkv": [("q", q), ("k", kv), ("v", kv)], "attn.proj": [("o", cfg.dim)],
            "mlp.gate_up": [("gate", hidden), ("up", hidden)], "mlp.down": [("down", cfg.dim)]}
    for block in model.layers:
        for path, parts in rows.items():
            slices = [(name if name in targets else None, size) for name, size in parts]
            if any(name for name, _ in slices):
                parent, attr = block.get_submodule(path.split(".")[0]), path.split(".")[1]
                setattr(parent, attr, LoRALinear(getattr(parent, attr), slices, rank, alpha, dropout))
    model.lora = {"rank": rank, "alpha": alpha, "dropout": dropout, "targets": [t for t in LORA_TARGETS if t in targets],
                  "base": getattr(model, "source", None)}
    return model


def merge_lora(model):
    """Replace every LoRALinear by its merged Linear (in place): a plain MiniGPT again, with the same outputs."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    model.__dict__.pop("lora", None)
    return model


def lora_state_dict(model):
    """Only the adapter weights (what a LoRA checkpoint keeps): {name: tensor} for every lora_A/lora_B."""
    return {k: v for k, v in model.state_dict().items() if ".lora_A." in k or ".lora_B." in k}


@contextlib.contextmanager
def lora_disabled(model):
    """The base model's outputs while inside (DPO's reference is the policy with its adapters switched off)."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m in layers:
            m.enabled = True


# ----------------------------------------------------------------------------- loading

def config_mismatch(saved: dict, expected: MiniGPTConfig):
    """Names of the fields whose values differ, as 'field: saved X, expected Y'."""
    exp = expected.to_dict()
    ignore = {"dropout", "attn_dropout", "gradient_checkpointing", "aux_loss_coef"}  # training-only knobs, not shapes
    return [f"{k}: saved {saved.get(k)}, expected {exp[k]}" for k in exp
            if k not in ignore and k in saved and saved[k] != exp[k]]


def load_weights(model, state_dict, saved_config=None, source="checkpoint"):
    """Load a state dict, failing with one line that names differing config fields instead of a shape dump."""
    if saved_config is not None:
        diff = config_mismatch(saved_config, model.config)
        if diff:
            raise ValueError(f"{source}: model config does not match ({'; '.join(diff)})")
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"{source}: weights do not fit the model ({len(wrong)} shapes differ, e.g. {'; '.join(wrong[:2])})")
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not (k.endswith("lm_head.weight") and model.config.tie_embeddings)]
    if state_dict and all(".lora_" in k for k in state_dict):  # adapters only (a LoRA checkpoint): the base is loaded
        missing = [k for k in missing if ".lora_" in k]
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def hf_folder_message(run_dir):
    """A one-line error when run_dir is a Hugging Face model folder rather than a run directory, else None."""
    if os.path.isfile(os.path.join(run_dir, "model.safetensors")) and not any(
            os.path.isfile(os.path.join(run_dir, n)) for n in ("ckpt_best.pt", "ckpt_latest.pt")):
        return (f"{run_dir}: a Hugging Face model folder, not a run directory; make one with "
                f"`python export_hf.py --import-hf {run_dir} --out DIR`")
    return None


def _read_run(run_dir, which):
    """(config, checkpoint dict, checkpoint path) of a run directory."""
    if message := hf_folder_message(run_dir):
        raise ValueError(message)
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{run_dir}: no config.json; is this a run directory written by a train_*.py script?")
    try:
        with open(cfg_path) as f:
            run_config = json.load(f)
        settings = run_config.get("model") if isinstance(run_config, dict) else None
        if not isinstance(settings, dict):
            raise ValueError("no 'model' object with the model's settings")
        config = MiniGPTConfig.from_dict(settings)
    except ValueError as e:  # invalid JSON (JSONDecodeError is a ValueError) or a field of the wrong type or value
        raise ValueError(f"{cfg_path}: {e}") from None
    order = ["ckpt_best.pt", "ckpt_latest.pt"] if which == "best" else ["ckpt_latest.pt", "ckpt_best.pt"]
    path = next((os.path.join(run_dir, n) for n in order if os.path.isfile(os.path.join(run_dir, n))), None)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no ckpt_best.pt or ckpt_latest.pt")
    return config, load_checkpoint(path), path


def load_checkpoint(path):
    """A checkpoint's dict, on the CPU: load_state_dict copies to each parameter's device, and RNG states must be
    CPU tensors (loaded onto a GPU, resume crashed in torch.set_rng_state)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and values, no pickled code
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt or foreign file
        raise ValueError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    weights = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        if isinstance(ckpt, dict) and ckpt and all(isinstance(t, torch.Tensor) for t in ckpt.values()):
            what = "it holds bare weights, a state_dict; a checkpoint keeps them under 'model'"
        else:
            what = "no 'model' entry" if weights is None else "its 'model' entry is not a dict of tensors"
        raise ValueError(f"{path}: not a checkpoint written by a train_*.py script ({what})")
    return ckpt


def load_model(run_dir, device="cpu", which="best"):
    """The language model saved in a run directory (config.json + ckpt_best.pt or ckpt_latest.pt), in eval mode.
    A LoRA run's checkpoint holds only adapters: they are added to the base model it names and merged."""
    config, ckpt, path = _read_run(run_dir, which)
    if any(k.startswith("backbone.") for k in ckpt["model"]):
        raise ValueError(f"{path}: holds a reward or value model, not a language model")
    if ckpt.get("lora"):
        model = _load_lora_run(ckpt, path, device)
    else:
        model = MiniGPT(config)
        load_weights(model, ckpt["model"], ckpt.get("model_config"), source=path)
    model.checkpoint = f"{path} (step {ckpt.get('step', '?')})"  # which weights, for the "loaded ..." lines
    model.source = {"run_dir": os.path.abspath(run_dir), "file": os.path.basename(path), "step": ckpt.get("step")}
    return model.to(device).eval()


def _load_lora_run(ckpt, path, device):
    """The base model a LoRA checkpoint names, with its adapters merged in (a plain MiniGPT)."""
    lora, base = ckpt["lora"], ckpt["lora"].get("base") or {}
    if not os.path.isfile(os.path.join(base.get("run_dir", ""), base.get("file", ""))):
        raise FileNotFoundError(f"{path}: the base model of these adapters, {base.get('run_dir')}/{base.get('file')}, "
                                f"is not there (export_hf.py --merge-lora makes a run directory that needs no base)")
    model = load_model(base["run_dir"], device, "best" if base["file"] == "ckpt_best.pt" else "latest")
    if model.source["step"] != base.get("step"):
        raise ValueError(f"{path}: its base {base['run_dir']}/{base['file']} is now step {model.source['step']}, "
                         f"but the adapters were trained on step {base.get('step')}")
    add_lora(model, lora["rank"], lora["alpha"], 0.0, lora["targets"])
    load_weights(model, ckpt["model"], source=path)
    return merge_lora(model)


def load_value_model(run_dir, device="cpu", which="best", trained_head=False, likelihood=False):
    """A ValueModel from a reward-model run directory, or a fresh head on a language model's backbone (an error
    with trained_head=True: a reward must come from a trained head, not a random one). A reward model keeps its
    likelihood term when trained_head=True (its reward); a critic started from it (trained_head=False) does not.
    likelihood=True: a fresh head on a language model gets a likelihood term (train_reward.py --likelihood)."""
    config, ckpt, path = _read_run(run_dir, which)
    state = dict(ckpt["model"])
    has_term = state.get("likelihood_weight") is not None
    if has_term and not trained_head:
        del state["likelihood_weight"]
    model = ValueModel(config, likelihood=(has_term and trained_head) or likelihood)
    if any(k.startswith("backbone.") for k in state):
        load_weights(model, state, source=path)
    elif trained_head:
        raise ValueError(f"{path}: holds a language model, not a reward model (train one with train_reward.py)")
    elif ckpt.get("lora"):  # a LoRA run: its merged model is the backbone
        model.backbone.load_state_dict(load_model(run_dir, which=which).state_dict())
    else:
        load_weights(model.backbone, ckpt["model"], ckpt.get("model_config"), source=path)
    model.checkpoint = f"{path} (step {ckpt.get('step', '?')})"
    return model.to(device).eval()


if __name__ == "__main__":  # prints the preset table shown in the README
    print(f"{'preset':<12}{'params':>10}  dim layers heads kv  ffn  experts")
    for name in PRESETS:
        c = get_config(name)
        with torch.device("meta"):
            n = MiniGPT(c).num_params()
        print(f"{name:<12}{n / 1e6:>9.2f}M  {c.dim:>3} {c.n_layers:>6} {c.n_heads:>5} {c.n_kv_heads:>2} {c.ffn_hidden:>4}  {c.n_experts}")
