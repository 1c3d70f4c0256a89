"""Exercise 07: gradient accumulation. The accumulated gradient must equal the whole batch's, however it is split;
then a few optimizer steps with it."""
import torch

import model
from harness import expect_close, load


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return model.MiniGPT(model.MiniGPTConfig(vocab_size=40, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32))


def test_grad_accum_gradient_equals_the_whole_batchs_for_every_split():
    acc = load("grad_accum")
    tokens = torch.randint(0, 40, (8, 17), generator=torch.Generator().manual_seed(1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    net = tiny_model()
    net.zero_grad()
    whole = net(x, y).loss
    whole.backward()
    expected = {name: p.grad.clone() for name, p in net.named_parameters()}
    for n_micro in (1, 2, 4, 8):
        micro = list(zip(x.chunk(n_micro), y.chunk(n_micro)))
        loss = acc.accumulate_gradients(net, micro)
        expect_close(loss, whole.item(), f"the returned loss with {n_micro} micro-batches", atol=1e-5)
        for name, p in net.named_parameters():
            if p.grad is None:
                raise AssertionError(f"{name} has no gradient after accumulate_gradients with {n_micro} micro-batches")
            expect_close(p.grad, expected[name], f"gradient of {name} with {n_micro} micro-batches", atol=1e-6)


def test_grad_accum_starts_from_zero_gradients():
    acc = load("grad_accum")
    tokens = torch.randint(0, 40, (4, 9), generator=torch.Generator().manual_seed(2))
    net = tiny_model()
    micro = list(zip(tokens[:, :-1].chunk(2), tokens[:, 1:].chunk(2)))
    acc.accumulate_gradients(net, micro)
    first = {name: p.grad.clone() for name, p in net.named_parameters()}
    acc.accumulate_gradients(net, micro)  # a second call must not add to the first call's gradients
    for name, p in net.named_parameters():
        expect_close(p.grad, first[name], f"gradient of {name} after a second call (zero the gradients first)")


def test_grad_accum_trains_a_model_step_by_step():
    acc = load("grad_accum")
    net = tiny_model()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    pattern = torch.arange(16).repeat(8, 2) % 40  # a sequence to memorise: 0 1 2 ... 15 0 1 2 ...
    micro = list(zip(pattern[:, :-1].chunk(4), pattern[:, 1:].chunk(4)))
    losses = []
    for step in range(30):
        losses.append(acc.accumulate_gradients(net, micro))
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    print("loss per step:", " ".join(f"{v:.3f}" for v in losses[::3]))
    assert losses[-1] < losses[0] / 2, f"the loss went {losses[0]:.3f} -> {losses[-1]:.3f} in 30 steps"
