"""Exercise 13: LoRA. Compared with model.LoRALinear (forward, gradients of A and B, merge), then put into the model:
merging keeps the outputs, and train_sft.py --lora-rank gives the project's run."""
import torch
import torch.nn as nn

import model
import train_sft
from harness import FAST, expect_close, load, same_run_as_the_projects


def lora_layer(seed=0):
    torch.manual_seed(seed)
    layer = model.LoRALinear(nn.Linear(12, 10, bias=False), [("q", 10)], rank=3, alpha=6, dropout=0.0)
    nn.init.normal_(layer.lora_B["q"])  # B starts at zero; make it non-zero so the update shows
    return layer


def test_lora_forward_and_gradients_equal_the_projects():
    lora = load("lora")
    layer = lora_layer()
    x = torch.randn(2, 5, 12)
    A, B = layer.lora_A["q"], layer.lora_B["q"]
    mine = lora.lora_forward(x, layer.base.weight, A, B, layer.scale)
    theirs = layer(x)
    expect_close(mine, theirs, "lora_forward(x, weight, A, B, alpha / rank)")
    weights = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(0))
    my_grads = torch.autograd.grad((mine * weights).sum(), [A, B])
    their_grads = torch.autograd.grad((theirs * weights).sum(), [A, B])
    expect_close(my_grads[0], their_grads[0], "gradient with respect to A")
    expect_close(my_grads[1], their_grads[1], "gradient with respect to B")


def test_lora_merge_equals_the_projects_and_keeps_the_outputs():
    lora = load("lora")
    layer = lora_layer(1)
    merged = lora.lora_merge(layer.base.weight, layer.lora_A["q"], layer.lora_B["q"], layer.scale)
    expect_close(merged, layer.merged().weight, "lora_merge(weight, A, B, scale)")
    x = torch.randn(4, 12)
    expect_close(x @ merged.t(), layer(x), "outputs of the merged weight vs the adapter's", atol=1e-5)


def forward_using(lora):
    """LoRALinear.forward with each slice's update computed by the student's lora_forward."""
    def forward(self, x):
        outputs = []
        for name, weight in zip(self.names, self.base.weight.split(self.sizes)):
            if name:
                outputs.append(lora.lora_forward(self.dropout(x), weight, self.lora_A[name], self.lora_B[name], self.scale))
            else:
                outputs.append(x @ weight.t())
        return torch.cat(outputs, dim=-1)
    return forward


def test_lora_in_train_sft_gives_the_projects_run(monkeypatch, tmp_path, request):
    lora = load("lora")
    lora.lora_forward(torch.ones(1, 2), torch.ones(3, 2), torch.ones(1, 2), torch.ones(3, 1), 1.0)
    chain = request.getfixturevalue("chain")
    argv = FAST + ["--max-steps", "6", "--eval-interval", "3", "--init-from", chain["pretrain"], "--eval-max-new-tokens", "4",
                   "--lora-rank", "4", "--lr", "3e-3"]
    same_run_as_the_projects(monkeypatch, tmp_path, train_sft, argv, [(model.LoRALinear, "forward", forward_using(lora))],
                             keys=("train_loss", "val_loss"))


def test_lora_merged_model_gives_the_adapters_logits(monkeypatch):
    lora = load("lora")
    lora.lora_merge(torch.ones(3, 2), torch.ones(1, 2), torch.ones(3, 1), 1.0)
    torch.manual_seed(0)
    net = model.add_lora(model.MiniGPT(model.MiniGPTConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                                           max_seq_len=16)), rank=4, alpha=8)
    for module in net.modules():
        if isinstance(module, model.LoRALinear):
            for b in module.lora_B.values():
                nn.init.normal_(b, std=0.1)
    idx = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        before = net(idx).logits

    def merged(self):  # LoRALinear.merged with each slice's weight merged by the student's lora_merge
        parts = [lora.lora_merge(w, self.lora_A[n], self.lora_B[n], self.scale) if n else w
                 for n, w in zip(self.names, self.base.weight.detach().split(self.sizes))]
        linear = nn.Linear(self.base.in_features, self.base.out_features, bias=False)
        linear.weight = nn.Parameter(torch.cat(parts).detach())
        return linear

    monkeypatch.setattr(model.LoRALinear, "merged", merged)
    model.merge_lora(net)
    assert not any(isinstance(m, model.LoRALinear) for m in net.modules())
    with torch.no_grad():
        expect_close(net(idx).logits, before, "logits of the merged model vs the model with adapters", atol=1e-4)
