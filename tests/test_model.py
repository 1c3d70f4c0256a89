import pytest
import torch

from model import KVCache, MiniGPT, MiniGPTConfig, PRESETS, get_config, load_weights


def tiny(**kw):
    return MiniGPTConfig(**{**dict(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64), **kw})


@pytest.mark.parametrize("kw", [dict(), dict(n_kv_heads=1), dict(n_kv_heads=4), dict(n_experts=4, experts_per_token=2)],
                         ids=["gqa", "multi-query", "multi-head", "moe"])
def test_kv_cache_decoding_matches_full_forward(kw):
    torch.manual_seed(0)
    model = MiniGPT(tiny(**kw)).eval()
    idx = torch.randint(0, 97, (2, 20))
    full = model(idx).logits
    cache = KVCache(model.config, 2, 20, "cpu", torch.float32)
    steps = [model(idx[:, :8], cache=cache).logits]  # prefill 8, then one token at a time
    steps += [model(idx[:, t:t + 1], cache=cache).logits for t in range(8, 20)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_chunked_prefill_matches_full_forward():
    torch.manual_seed(0)
    model = MiniGPT(tiny()).eval()
    idx = torch.randint(0, 97, (1, 16))
    cache = KVCache(model.config, 1, 16, "cpu", torch.float32)
    parts = [model(idx[:, :5], cache=cache).logits, model(idx[:, 5:16], cache=cache).logits]
    assert torch.allclose(torch.cat(parts, 1), model(idx).logits, atol=1e-5)


def test_chunked_prefill_in_bf16_takes_the_shifted_causal_attention():
    """On CPU in bf16 a chunk after cached keys goes through grouped_attention with its causal mask shifted by the
    cached length (every cached key visible): the same logits as the whole forward's, up to bf16 rounding."""
    torch.manual_seed(0)
    model = MiniGPT(tiny()).eval()
    idx = torch.randint(0, 97, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        whole = model(idx).logits.float()
        cache = KVCache(model.config, 2, 16, "cpu", torch.bfloat16)
        parts = torch.cat([model(idx[:, :5], cache=cache).logits, model(idx[:, 5:], cache=cache).logits], 1).float()
    assert (parts - whole).abs().max() < 0.05 and (parts.argmax(-1) == whole.argmax(-1)).float().mean() > 0.9
    # without the shift the chunk's first query would see only the first key: far from the whole forward
    assert (parts[:, 5:] - model(idx[:, 5:]).logits).abs().max() > 0.1


def test_left_padded_rows_match_unpadded_rows():
    torch.manual_seed(0)
    model = MiniGPT(tiny()).eval()
    short = torch.randint(3, 97, (1, 5))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1)
    cache = KVCache(model.config, 1, 8, "cpu", torch.float32, pad_lens=torch.tensor([3]))
    logits_padded = model(padded, cache=cache).logits[:, -1]
    assert torch.allclose(logits_padded, model(short).logits[:, -1], atol=1e-5)


def test_decode_step_with_its_static_cache_matches_forward_on_a_left_padded_batch():
    """decode_step (the compiled generator's step: position as a tensor, every cache slot read, masked) gives the
    logits of forward() with the sliced cache, row by row, on rows of different lengths."""
    torch.manual_seed(0)
    model = MiniGPT(tiny()).eval()
    idx = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 0, 3, 4]])  # the second row is left-padded by 3
    pad = torch.tensor([0, 3])
    static = KVCache(model.config, 2, model.config.max_seq_len, "cpu", torch.float32, pad_lens=pad)
    sliced = KVCache(model.config, 2, 9, "cpu", torch.float32, pad_lens=pad)
    model(idx, cache=static), model(idx, cache=sliced)
    for pair in ([10, 11], [12, 13], [14, 15], [16, 17]):
        token = torch.tensor(pair)
        filled = model.decode_step(token, static, torch.tensor([static.pos]), torch.arange(static.pos + 1))
        step = model.decode_step(token, static, torch.tensor([static.pos]))  # every slot (the same key written again)
        static.pos += 1
        assert torch.allclose(step, model(token[:, None], cache=sliced).logits[:, -1], atol=1e-5)
        assert torch.allclose(filled, step, atol=1e-5)  # reading only the filled slots changes nothing
    # and the padded row is the unpadded sequence alone
    alone = model(torch.tensor([[3, 4, 11, 13, 15, 17]])).logits[0, -1]
    assert torch.allclose(step[1], alone, atol=1e-5)


def test_answer_logprobs_scores_only_the_answer_tokens_with_the_full_forwards_numbers():
    """RL's answer_logprobs: log p(y) on the mask, 0 elsewhere, the logits of the masked positions only, the same
    values and gradients as the whole forward's token_logprobs times the mask (rows of different lengths, padding)."""
    from model import answer_logprobs, token_logprobs
    torch.manual_seed(0)
    model = MiniGPT(tiny())
    x, y = torch.randint(0, 97, (3, 12)), torch.randint(0, 97, (3, 12))
    mask = torch.zeros(3, 12)
    mask[0, 3:7], mask[1, 5:9], mask[2, 2:4] = 1, 1, 1  # columns 9-11: padding in every row
    logprobs, logits = answer_logprobs(model, x, y, mask)
    assert logits.shape == (10, 97) and logprobs.shape == (3, 12)
    full = token_logprobs(model(x).logits, y) * mask
    assert torch.allclose(logprobs, full, atol=1e-6) and (logprobs[mask == 0] == 0).all()
    grads = torch.autograd.grad(logprobs.sum(), list(model.parameters()))
    full_grads = torch.autograd.grad(full.sum(), list(model.parameters()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, full_grads))


def test_answer_logprobs_computes_a_prefix_every_row_shares_once(monkeypatch):
    """A prefix all rows share (the tool chain's system prompt) runs once, on one row, and its keys and values are
    copied to every row: the same log-probs and gradients as the whole rows, in fp32."""
    import model as model_module
    from model import answer_logprobs
    torch.manual_seed(0)
    model = MiniGPT(tiny(max_seq_len=96))
    x, y = torch.randint(0, 97, (4, 80)), torch.randint(0, 97, (4, 80))
    x[:, :40] = x[0, :40]  # 40 shared columns, then each row its own question and answer
    mask = torch.zeros(4, 80)
    for row in range(4):
        mask[row, 45 + row:60 + 3 * row] = 1
    assert model_module.shared_prefix_length(x, mask.bool()) == 40
    calls = []
    forward_hidden = model.forward_hidden
    monkeypatch.setattr(model, "forward_hidden", lambda idx, cache=None: calls.append(tuple(idx.shape)) or forward_hidden(idx, cache))
    shared, _ = answer_logprobs(model, x, y, mask)
    shared_grads = torch.autograd.grad(shared.sum(), list(model.parameters()))
    assert calls == [(1, 40), (4, 69 - 40)]  # the prefix once; then each row from column 40 to the last answer token (68)
    monkeypatch.setattr(model_module, "SHARED_PREFIX_MIN", 10 ** 9)  # whole rows
    whole, _ = answer_logprobs(model, x, y, mask)
    whole_grads = torch.autograd.grad(whole.sum(), list(model.parameters()))
    assert calls[-1] == (4, 69)
    assert torch.allclose(shared, whole, atol=1e-5) and (shared[mask == 0] == 0).all()
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(shared_grads, whole_grads))


def test_loss_mask_and_ignore_index_exclude_positions():
    torch.manual_seed(0)
    model = MiniGPT(tiny()).eval()
    idx, targets = torch.randint(0, 97, (2, 10)), torch.randint(0, 97, (2, 10))
    mask = torch.zeros(2, 10, dtype=torch.long)
    mask[:, 5:] = 1
    masked = model(idx, targets, mask).loss
    logits = model(idx).logits
    manual = torch.nn.functional.cross_entropy(logits[:, 5:].reshape(-1, 97), targets[:, 5:].reshape(-1))
    assert torch.allclose(masked, manual, atol=1e-6)
    ignored = targets.clone()
    ignored[:, :5] = -100
    assert torch.allclose(model(idx, ignored).loss, manual, atol=1e-6)


def test_last_logits_only_returns_one_position():
    model = MiniGPT(tiny()).eval()
    idx = torch.randint(0, 97, (2, 10))
    out = model(idx, last_logits_only=True).logits
    assert out.shape == (2, 1, 97) and torch.allclose(out[:, 0], model(idx).logits[:, -1], atol=1e-6)


def test_moe_returns_aux_loss_in_training_and_gradients_reach_router():
    model = MiniGPT(tiny(n_experts=4, experts_per_token=2)).train()
    idx = torch.randint(0, 97, (2, 12))
    out = model(idx, idx)
    assert out.aux_loss.item() > 0
    (out.loss + out.aux_loss).backward()
    assert model.layers[0].mlp.router.weight.grad.abs().sum() > 0


def test_dense_model_has_zero_aux_loss():
    assert MiniGPT(tiny()).train()(torch.randint(0, 97, (1, 4))).aux_loss.item() == 0


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = MiniGPT(tiny()).train()
    b = MiniGPT(tiny(gradient_checkpointing=True)).train()
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 97, (2, 12))
    for m in (a, b):
        m(idx, idx).loss.backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), n


def test_tied_embeddings_share_one_tensor():
    model = MiniGPT(tiny())
    assert model.lm_head.weight is model.embed.weight


def test_weight_decay_only_on_matrices():
    opt = MiniGPT(tiny()).configure_optimizer(1e-3, 0.1)
    decay, no_decay = opt.param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_presets_have_documented_sizes():
    with torch.device("meta"):
        sizes = {name: MiniGPT(get_config(name)).num_params() / 1e6 for name in PRESETS}
    assert 1 <= sizes["tiny"] <= 3 and 24 <= sizes["small"] <= 28 and 90 <= sizes["medium"] <= 115
    assert all(f"{n}-moe" in sizes for n in ("tiny", "small", "medium", "deep"))


def test_loading_mismatched_config_names_the_fields():
    model = MiniGPT(tiny())
    other = MiniGPT(tiny(dim=32, n_layers=3))
    with pytest.raises(ValueError, match=r"dim: saved 32, expected 64; n_layers: saved 3, expected 2"):
        load_weights(model, other.state_dict(), other.config.to_dict(), source="ckpt.pt")
    with pytest.raises(ValueError, match="weights do not fit"):
        load_weights(model, other.state_dict(), source="ckpt.pt")


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="n_kv_heads"):
        tiny(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")
    with pytest.raises(ValueError, match="n_heads must be at least 1"):
        tiny(n_heads=0)
    with pytest.raises(ValueError, match="field 'dim' should be int, got 'big'"):
        MiniGPTConfig.from_dict({"dim": "big"})
    with pytest.raises(ValueError, match="field 'tie_embeddings' should be bool, got 1"):
        MiniGPTConfig.from_dict({"tie_embeddings": 1})
    assert MiniGPTConfig.from_dict({"rope_theta": 500, "ffn_hidden": None}).rope_theta == 500  # an int is a fine float


def test_grouped_cpu_attention_matches_sdpa():
    import torch.nn.functional as F
    from model import grouped_attention
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 8, 16, 32), torch.randn(2, 2, 16, 32), torch.randn(2, 2, 16, 32)
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert torch.allclose(grouped_attention(q, k, v), reference, atol=1e-5)
    bf16 = grouped_attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
    assert torch.allclose(bf16, reference, atol=0.05)
    # a decode step of a left-padded batch: one query per row, the padding keys hidden by key_mask
    q1, visible = torch.randn(2, 8, 1, 32), torch.arange(16)[None, None, None, :] >= torch.tensor([0, 5])[:, None, None, None]
    reference = F.scaled_dot_product_attention(q1, k, v, attn_mask=visible, enable_gqa=True)
    assert torch.allclose(grouped_attention(q1, k, v, causal=False, key_mask=visible), reference, atol=1e-5)


def test_bf16_autocast_loss_matches_fp32_loss():
    torch.manual_seed(0)
    model = MiniGPT(tiny()).eval()
    idx = torch.randint(0, 97, (4, 32))
    fp32 = model(idx, idx).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(idx, idx).loss
    assert bf16.dtype == torch.float32 and abs(bf16.item() - fp32.item()) < 0.02


@pytest.mark.parametrize("bf16", [False, True], ids=["sdpa-fp32", "grouped-bf16"])
def test_dropout_on_residuals_and_attention_probabilities_separately(bf16):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 64)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def two_calls(module, *args):
        with autocast:
            return module(*args), module(*args)

    for attn_dropout, attention_is_random in ((0.0, False), (0.5, True)):
        model = MiniGPT(tiny(dropout=0.5, attn_dropout=attn_dropout)).train()
        layer, cos, sin = model.layers[0], model.rope_cos[:16], model.rope_sin[:16]
        if bf16:
            cos, sin = cos.bfloat16(), sin.bfloat16()
        a, b = two_calls(layer.attn, x, cos, sin)
        assert (not torch.equal(a, b)) == attention_is_random  # dropout alone leaves the attention probabilities alone
        idx = torch.randint(0, 97, (2, 16))
        a, b = two_calls(model, idx)
        assert not torch.equal(a.logits, b.logits)  # the residual branches are dropped in training...
        model.eval()
        a, b = two_calls(model, idx)
        assert torch.equal(a.logits, b.logits)      # ...and nothing in eval mode


def test_written_out_gradients_match_autograd():
    import torch.nn.functional as F
    from model import RMSNormFunction, cross_entropy
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 6, dtype=torch.double, requires_grad=True), torch.rand(6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: RMSNormFunction.apply(x, w, 1e-5), (x, w))
    logits = torch.randn(2, 5, 11, requires_grad=True)
    targets = torch.randint(0, 11, (2, 5))
    targets[0, :2] = -100
    loss = cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(loss, logits)
    reference = F.cross_entropy(logits.view(-1, 11), targets.view(-1), ignore_index=-100)
    (reference_grad,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(loss, reference, atol=1e-6) and torch.allclose(grad, reference_grad, atol=1e-7)
    assert grad[0, :2].abs().max() == 0  # ignored targets get no gradient


def test_int8_quantization_replaces_every_linear_and_keeps_logits_close():
    import copy
    from model import Int8Linear, quantize_int8
    torch.manual_seed(0)
    model = MiniGPT(tiny()).eval()
    quantized = quantize_int8(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.Linear) for m in quantized.modules())
    assert all(m.weight_int8.dtype == torch.int8 for m in quantized.modules() if isinstance(m, Int8Linear))
    idx = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        reference = model(idx).logits
        for dtype in (torch.float32, torch.bfloat16):
            logits = copy.deepcopy(quantized).to(dtype)(idx).logits.float()
            assert (logits - reference).norm() / reference.norm() < 0.03  # int8 rounding: ~1%, bf16 adds ~1%


def test_int8_fused_kernel_matches_dequantised_matmul():
    from model import Int8Linear
    torch.manual_seed(0)
    layer = Int8Linear(torch.randn(48, 64)).to(torch.bfloat16)
    x = torch.randn(3, 5, 64, dtype=torch.bfloat16)
    dequantised = (x.float() @ layer.weight_int8.float().t()) * layer.scale.float()  # the non-CPU path, in fp32
    assert torch.allclose(layer(x).float(), dequantised, rtol=0.02, atol=0.05)
