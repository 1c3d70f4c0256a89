"""Exercise 05: causal attention with GQA and an offset for the KV cache. Compared with PyTorch's SDPA, then put
in the model: decoding token by token from the KV cache must give the logits of one full forward, and it trains."""
import torch
import torch.nn.functional as F

import model
from harness import expect_close, gradients, leaves, load, pretrain_learns


def reference(q, k, v):
    T, S = q.shape[2], k.shape[2]
    visible = torch.arange(S)[None, :] <= torch.arange(S - T, S)[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=q.shape[1] != k.shape[1])


def test_attention_values_and_gradients_equal_sdpa_for_training_decoding_and_chunks():
    att = load("attention")
    torch.manual_seed(0)
    for n_heads, n_kv, T, S, what in ((4, 4, 7, 7, "training (T = S, as many kv heads as heads)"),
                                     (4, 2, 7, 7, "training with GQA (4 heads, 2 kv heads)"),
                                     (4, 1, 1, 9, "one decode step from a cache (T = 1, S = 9, one kv head)"),
                                     (6, 2, 3, 8, "a chunk of 3 after 5 cached positions")):
        q, k, v = torch.randn(2, n_heads, T, 8), torch.randn(2, n_kv, S, 8), torch.randn(2, n_kv, S, 8)
        mine, my_grads = gradients(att.attention, *leaves(q, k, v))
        theirs, their_grads = gradients(reference, *leaves(q, k, v))
        expect_close(mine, theirs, f"attention output, {what}")
        for name, a, b in zip("qkv", my_grads, their_grads):
            expect_close(a, b, f"gradient with respect to {name}, {what}")


def forward_using(attention):
    """model.Attention.forward with the attention itself replaced (no padding masks: every row is full)."""
    def forward(self, x, cos, sin, cache=None, layer=0, attn_mask=None, position=None):  # position: decode_step only
        B, T, _ = x.shape
        qkv = self.qkv(x).unflatten(-1, (self.n_heads + 2 * self.n_kv_heads, self.head_dim)).transpose(1, 2)
        q, k, v = qkv.split([self.n_heads, self.n_kv_heads, self.n_kv_heads], dim=1)
        q, k = model.apply_rope(q, cos, sin), model.apply_rope(k, cos, sin)
        if cache is not None:  # write this step's keys and values after the cached ones, then attend over all
            cache.k[layer][:, :, cache.pos:cache.pos + T] = k
            cache.v[layer][:, :, cache.pos:cache.pos + T] = v
            k, v = cache.k[layer][:, :, :cache.pos + T], cache.v[layer][:, :, :cache.pos + T]
        return self.proj(attention(q, k, v).transpose(1, 2).reshape(B, T, -1))
    return forward


def test_attention_in_the_model_decodes_from_the_kv_cache_like_a_full_forward(monkeypatch):
    att = load("attention")
    torch.manual_seed(0)
    net = model.MiniGPT(model.MiniGPTConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)).eval()
    idx = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        expected = net(idx).logits
        monkeypatch.setattr(model.Attention, "forward", forward_using(att.attention))
        full = net(idx).logits
        expect_close(full, expected, "logits of a full forward with your attention", atol=1e-4)
        cache = model.KVCache(net.config, 2, 16, "cpu", torch.float32)
        steps = [net(idx[:, :4], cache=cache).logits]                         # prefill 4 tokens
        steps += [net(idx[:, t:t + 1], cache=cache).logits for t in range(4, 10)]  # then one token at a time
        expect_close(torch.cat(steps, dim=1), expected, "logits decoded from the KV cache", atol=1e-4)


def test_attention_in_the_model_trains(monkeypatch, tmp_path, data_cache):
    att = load("attention")
    att.attention(torch.ones(1, 2, 1, 4), torch.ones(1, 1, 1, 4), torch.ones(1, 1, 1, 4))
    monkeypatch.setattr(model.Attention, "forward", forward_using(att.attention))
    pretrain_learns(tmp_path / "run")
