"""Exercise 04: RoPE. Compared with model.rope_tables/apply_rope, checked to encode relative position, then trained."""
import torch

import model
from harness import expect_close, gradients, leaves, load, pretrain_learns


def test_rope_tables_equal_the_projects():
    rope = load("rope")
    for head_dim, max_len, theta in ((8, 16, 10000.0), (32, 64, 500000.0)):
        cos, sin = rope.rope_tables(head_dim, max_len, theta)
        ref_cos, ref_sin = model.rope_tables(head_dim, max_len, theta)
        expect_close(cos, ref_cos, f"cos table (head_dim {head_dim}, theta {theta:g})")
        expect_close(sin, ref_sin, f"sin table (head_dim {head_dim}, theta {theta:g})")


def test_rope_rotation_and_its_gradient_equal_the_projects():
    rope = load("rope")
    cos, sin = model.rope_tables(8, 12, 10000.0)
    x = torch.randn(2, 3, 12, 8)
    mine, my_grads = gradients(lambda a: rope.apply_rope(a, cos, sin), *leaves(x))
    theirs, their_grads = gradients(lambda a: model.apply_rope(a, cos, sin), *leaves(x))
    expect_close(mine, theirs, "apply_rope(x, cos, sin)")
    expect_close(my_grads[0], their_grads[0], "gradient with respect to x")
    per_row = (cos[None, None].expand(2, 1, 12, 8), sin[None, None].expand(2, 1, 12, 8))  # padded batches pass these
    expect_close(rope.apply_rope(x, *per_row), theirs, "apply_rope with (B, 1, T, head_dim) tables")


def test_rope_scores_depend_only_on_the_relative_position():
    rope = load("rope")
    cos, sin = rope.rope_tables(16, 40, 10000.0)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):  # the rotated query at position m against the rotated key at position n
        qm = rope.apply_rope(q[None, None, None], cos[m:m + 1], sin[m:m + 1])
        kn = rope.apply_rope(k[None, None, None], cos[n:n + 1], sin[n:n + 1])
        return (qm * kn).sum()

    expect_close(score(7, 3), score(30, 26), "score at positions (7, 3) vs (30, 26), both 4 apart", atol=1e-4)
    expect_close(score(0, 0), (q * k).sum(), "score at position 0 (no rotation)", atol=1e-4)


def test_rope_in_the_model_trains(monkeypatch, tmp_path, data_cache):
    rope = load("rope")
    rope.apply_rope(torch.ones(1, 1, 2, 4), *rope.rope_tables(4, 2, 10000.0))
    monkeypatch.setattr(model, "rope_tables", rope.rope_tables)  # MiniGPT() builds its tables with this
    monkeypatch.setattr(model, "apply_rope", rope.apply_rope)    # Attention.forward rotates q and k with this
    pretrain_learns(tmp_path / "run")
