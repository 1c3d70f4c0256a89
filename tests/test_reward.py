"""Reward model: Bradley-Terry loss, where the reward is read, backbone freezing, the loop and --score."""
import json
import math
import os

import pytest
import torch

import train_reward
from conftest import FAST
from model import ValueModel, get_config, load_value_model
from train_reward import reward_loss, rewards_at_last_token


def test_bradley_terry_loss_matches_hand_computation():
    losses = reward_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert losses.tolist() == pytest.approx([math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))])
    assert reward_loss(torch.tensor([2.0]), torch.tensor([1.0]), margin=1.0).item() == pytest.approx(math.log(2))


def test_reward_is_read_at_the_last_real_token_and_ignores_padding():
    model = ValueModel(get_config("tiny")).eval()
    ids = torch.tensor([[1, 50, 60, 2]])
    padded = torch.tensor([[1, 50, 60, 2, 0, 0, 0]])
    with torch.no_grad():
        alone = rewards_at_last_token(model(ids)[0], torch.tensor([4]))
        in_batch = rewards_at_last_token(model(padded)[0], torch.tensor([4]))
    assert alone.item() == pytest.approx(in_batch.item(), abs=1e-5)  # causal: padding after the token changes nothing


def test_the_scalar_head_runs_in_fp32_under_bf16_autocast():
    """The backbone runs in bf16, the head does not: a reward rounded to bf16 (~0.03 at 10) flips close pairs."""
    torch.manual_seed(0)
    model = ValueModel(get_config("tiny")).eval()
    model.head.weight.data.mul_(40)  # rewards of ~10, where bf16 rounds by ~0.03
    ids = torch.randint(3, 2048, (2, 16))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        values = model(ids)[0]
        hidden = model.backbone.forward_hidden(ids)[0]
    exact = hidden.float() @ model.head.weight[0] + model.head.bias
    assert values.dtype == torch.float32 and values.abs().max() > 5
    assert torch.allclose(values, exact, atol=1e-4)


def test_freeze_backbone_trains_only_the_head_norm_and_top_layers():
    model = ValueModel(get_config("tiny"))
    model.freeze_backbone(1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "head.weight" in trainable and "backbone.norm.weight" in trainable
    assert any(n.startswith("backbone.layers.3.") for n in trainable)
    assert not any(n.startswith(("backbone.layers.0.", "backbone.embed")) for n in trainable)


def test_the_likelihood_term_adds_the_weighted_log_likelihood_of_the_reply_alone():
    """reward = head at the last token + w x sum of log p(reply token) under the backbone's own language model;
    the prompt's tokens are left out (they are the same for every reply to it)."""
    torch.manual_seed(0)
    model = ValueModel(get_config("tiny"), likelihood=True).eval()
    model.likelihood_weight.data.fill_(0.5)
    ids = torch.randint(3, 2048, (2, 12))
    prompt_lengths, lengths = torch.tensor([5, 8]), torch.tensor([12, 10])
    with torch.no_grad():
        rewards = rewards_at_last_token(model(ids, prompt_lengths)[0], lengths)
        logp = torch.log_softmax(model.backbone(ids).logits.float(), -1)
        hidden = model.backbone.forward_hidden(ids)[0]
    for b in range(2):
        reply = sum(logp[b, t - 1, ids[b, t]] for t in range(int(prompt_lengths[b]), int(lengths[b])))
        head = hidden[b, lengths[b] - 1] @ model.head.weight[0] + model.head.bias
        assert rewards[b].item() == pytest.approx((head + 0.5 * reply).item(), abs=1e-4)
    with pytest.raises(ValueError, match="needs prompt_lengths"):
        model(ids)


def test_a_likelihood_reward_model_keeps_its_term_and_a_critic_from_it_does_not(stage_dirs):
    """The reward model's checkpoint holds the learned likelihood weight and its run logged the chosen replies' NLL;
    a critic started from it (PPO's default) gets the backbone and head, not the likelihood term."""
    reward = torch.load(os.path.join(stage_dirs["reward"], "ckpt_best.pt"), weights_only=True)["model"]
    assert reward["likelihood_weight"].item() != 1.0  # it starts at 1 and learns
    rows = [json.loads(line) for line in open(os.path.join(stage_dirs["reward"], "metrics.jsonl"))]
    assert all(r["nll"] > 0 for r in rows if "accuracy" in r)
    assert load_value_model(stage_dirs["reward"], trained_head=True).likelihood_weight is not None
    assert load_value_model(stage_dirs["reward"]).likelihood_weight is None  # the critic


def test_the_nll_needs_the_likelihood_term(stage_dirs):
    with pytest.raises(ValueError, match="--nll-coef"):
        train_reward.parse_args(["--init-from", stage_dirs["sft"], "--no-likelihood", "--nll-coef", "1"])


def test_reward_run_writes_accuracy_metrics_and_scores_a_response(stage_dirs, capsys):
    rows = [json.loads(line) for line in open(os.path.join(stage_dirs["reward"], "metrics.jsonl"))]
    evals = [r for r in rows if "eval_accuracy" in r]
    assert evals[0]["step"] == 0 and {"eval_margin", "eval_reward_mean", "eval_reward_std"} <= set(evals[0])
    assert {"loss", "accuracy", "margin", "reward_mean", "reward_std"} <= set(next(r for r in rows if "accuracy" in r))
    assert isinstance(load_value_model(stage_dirs["reward"]), ValueModel)
    train_reward.main(["--out-dir", stage_dirs["reward"], "--score", "What is 2 plus 3?", "2 plus 3 is 5."])
    assert capsys.readouterr().out.startswith("reward ")
    with pytest.raises(ValueError, match="holds a language model, not a reward model"):  # a random head's score
        train_reward.main(["--out-dir", stage_dirs["sft"], "--score", "What is 2 plus 3?", "2 plus 3 is 5."])


def test_reward_resume_with_frozen_backbone_is_exact(stage_dirs, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = FAST + ["--init-from", stage_dirs["sft"], "--eval-interval", "2", "--lr-decay-steps", "4",
                     "--freeze-backbone", "1", "--margin", "0.5"]
    train_reward.main(common + ["--max-steps", "4", "--out-dir", a])
    train_reward.main(common + ["--max-steps", "2", "--out-dir", b])
    train_reward.main(common + ["--max-steps", "4", "--out-dir", b, "--resume"])
    losses = lambda d: {r["step"]: r["loss"] for r in map(json.loads, open(os.path.join(d, "metrics.jsonl"))) if "accuracy" in r}  # noqa: E731
    assert losses(a) == losses(b) and len(losses(a)) == 4


def test_pairs_longer_than_the_context_are_cut_to_fit(stage_dirs, tmp_path):
    path = tmp_path / "long.jsonl"
    record = {"prompt": "Where does Mira live? " * 60, "chosen": "Mira lives in Oakvale. " * 10, "rejected": "I don't know. " * 10}
    path.write_text("\n".join([json.dumps(record)] * 6) + "\n")
    out = str(tmp_path / "long")
    train_reward.main(FAST + ["--init-from", stage_dirs["sft"], "--data", str(path), "--max-steps", "1",
                              "--eval-interval", "1", "--seq-len", "256", "--out-dir", out])  # the model's whole context
    assert os.path.isfile(os.path.join(out, "ckpt_best.pt"))


def test_an_untied_language_model_head_trains_when_its_likelihood_is_in_the_reward():
    """Without the likelihood term the head alone reads the backbone, so an untied lm_head is frozen (out of DDP);
    with it, the lm_head's log-probs are half the reward and the NLL trains it."""
    from model import MiniGPTConfig
    config = MiniGPTConfig(**{**get_config("tiny").to_dict(), "tie_embeddings": False})
    assert not ValueModel(config).backbone.lm_head.weight.requires_grad
    assert ValueModel(config, likelihood=True).backbone.lm_head.weight.requires_grad
