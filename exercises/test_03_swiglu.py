"""Exercise 03: SwiGLU. Compared with model.SwiGLU (values and gradients), then trained in the model."""
import torch

import model
from harness import expect_close, gradients, leaves, load, pretrain_learns


def test_swiglu_values_and_gradients_equal_the_projects():
    sw = load("swiglu")
    torch.manual_seed(0)
    reference = model.SwiGLU(16, 24)
    w_gate, w_up = reference.gate_up.weight.detach().chunk(2, dim=0)
    x = torch.randn(2, 5, 16)
    inputs = leaves(x, w_gate, w_up, reference.down.weight)
    mine, my_grads = gradients(sw.swiglu, *inputs)
    x2 = leaves(x)[0]
    theirs, their_grads = gradients(lambda a: reference(a), x2)
    expect_close(mine, theirs, "swiglu(x, w_gate, w_up, w_down)")
    expect_close(my_grads[0], their_grads[0], "gradient with respect to x")
    out = reference(x2)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    reference.zero_grad()
    (out * weights).sum().backward()
    g_gate, g_up = reference.gate_up.weight.grad.chunk(2, dim=0)
    expect_close(my_grads[1], g_gate, "gradient with respect to w_gate")
    expect_close(my_grads[2], g_up, "gradient with respect to w_up")
    expect_close(my_grads[3], reference.down.weight.grad, "gradient with respect to w_down")


def test_swiglu_in_the_model_trains(monkeypatch, tmp_path, data_cache):
    sw = load("swiglu")
    sw.swiglu(torch.ones(1, 4), torch.ones(6, 4), torch.ones(6, 4), torch.ones(4, 6))

    def forward(self, x):
        w_gate, w_up = self.gate_up.weight.chunk(2, dim=0)
        return sw.swiglu(x, w_gate, w_up, self.down.weight)

    monkeypatch.setattr(model.SwiGLU, "forward", forward)
    pretrain_learns(tmp_path / "run")
