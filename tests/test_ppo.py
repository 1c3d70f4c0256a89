"""PPO: GAE and the clipped losses against hand computations, rollout masks, and the loop with both rewards."""
import json
import os
import shutil

import pytest
import torch

import train_ppo
from conftest import FAST, torchrun
from data import response_targets, rollout_sequences
from tokenizer import BPETokenizer
from train_ppo import adaptive_kl_coef, gae, masked_whiten, policy_loss, value_loss


def test_gae_matches_hand_computation():
    # one row: a prompt position (mask 0), then three response tokens
    rewards = torch.tensor([[0.0, 0.1, -0.2, 1.0]])
    values = torch.tensor([[9.0, 0.5, 0.4, 0.3]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    gamma, lam = 0.9, 0.8
    d3 = 1.0 - 0.3                      # last token: no next value
    d2 = -0.2 + gamma * 0.3 - 0.4
    d1 = 0.1 + gamma * 0.4 - 0.5
    a3, a2 = d3, d2 + gamma * lam * d3
    a1 = d1 + gamma * lam * a2
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    assert advantages[0].tolist() == pytest.approx([0.0, a1, a2, a3])
    assert returns[0].tolist() == pytest.approx([0.0, a1 + 0.5, a2 + 0.4, a3 + 0.3])


def test_clipped_policy_and_value_losses_match_hand_computation():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    mask = torch.ones(1, 3)
    loss, clipfrac, approx_kl = policy_loss(new, old, adv, mask, cliprange=0.2)
    # per token max(-A r, -A clip(r)): max(-1.5, -1.2) = -1.2; max(-0.5, -0.8) = -0.5; max(2.2, 2.2) = 2.2
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3)
    assert clipfrac.item() == pytest.approx(2 / 3)
    assert approx_kl.item() == pytest.approx((0.5 * new ** 2).mean().item())
    values, old_values, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[2.0, 0.1]])
    # token 1: unclipped (1-2)^2 = 1, clipped 0.7 -> (0.7-2)^2 = 1.69 -> 1.69; token 2: 0.01 both
    loss, value_clipfrac = value_loss(values, old_values, returns, torch.ones(1, 2), 0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.01) / 2)
    assert value_clipfrac.item() == pytest.approx(1 / 2)  # token 1's clipped term was the larger (TRL's val/clipfrac_avg)


def test_whitened_advantages_have_zero_mean_unit_variance_on_the_mask():
    x, mask = torch.tensor([[5.0, 1.0, 2.0, 3.0]]), torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    w = masked_whiten(x, mask)
    assert w[0, 0] == 0 and w[0, 1:].mean().item() == pytest.approx(0, abs=1e-6)
    assert (w[0, 1:] ** 2).mean().item() == pytest.approx(1, abs=1e-4)


def test_rollout_masks_cover_exactly_the_generated_tokens():
    eos, pad = 2, 0
    prompts = [[1, 10, 11], [1, 12]]
    generated = [[20, 21, eos, pad, pad], [22, 23, 24, 25, 26]]  # row 0 stopped; row 1 ran out of tokens
    ids, lengths, prompt_lengths, responses = rollout_sequences(prompts, generated, eos, pad)
    assert responses == [[20, 21, eos], [22, 23, 24, 25, 26]]
    x, y, mask = response_targets(ids, lengths, prompt_lengths)
    assert y[0][mask[0] == 1].tolist() == [20, 21, eos] and y[1][mask[1] == 1].tolist() == [22, 23, 24, 25, 26]


def rows(d):
    return [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]


PPO_FAST = FAST + ["--rollout-batch", "8", "--minibatch-size", "4", "--ppo-epochs", "2", "--max-new-tokens", "8",
                   "--eval-batch", "8"]


def test_ppo_with_reward_model_logs_every_metric_and_resumes_exactly(stage_dirs, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = PPO_FAST + ["--init-from", stage_dirs["sft"], "--reward-model", stage_dirs["reward"], "--eval-interval", "2",
                         "--lr-decay-steps", "4", "--adaptive-kl"]
    train_ppo.main(common + ["--max-steps", "4", "--out-dir", a])
    train_ppo.main(common + ["--max-steps", "2", "--out-dir", b])
    train_ppo.main(common + ["--max-steps", "4", "--out-dir", b, "--resume"])
    train = [r for r in rows(a) if "pg_loss" in r]
    assert {"reward", "accuracy", "kl", "entropy", "clipfrac", "approx_kl", "value_loss", "response_length", "kl_coef"} <= set(train[0])
    assert train[-1]["kl_coef"] != 0.2  # adaptive
    trl_names = {"objective/kl", "objective/scores", "objective/rlhf_reward", "objective/non_score_reward", "objective/entropy",
                 "policy/approxkl_avg", "policy/clipfrac_avg", "policy/entropy_avg", "loss/policy_avg", "loss/value_avg",
                 "val/clipfrac_avg", "eps", "episode"}
    assert trl_names <= set(train[0])
    assert train[0]["objective/rlhf_reward"] == pytest.approx(train[0]["objective/scores"] - 0.2 * train[0]["objective/kl"])
    assert {"val_reward", "val_accuracy", "val_kl"} <= set(rows(a)[0])
    key = lambda d: {r["step"]: (r["reward"], r["pg_loss"]) for r in rows(d) if "pg_loss" in r}  # noqa: E731
    assert key(a) == key(b) and len(key(a)) == 4
    ckpt = torch.load(os.path.join(a, "ckpt_latest.pt"), weights_only=True)
    assert {"model", "critic", "kl_coef"} <= set(ckpt)


def test_ppo_builtin_reward_is_the_answer_checker(stage_dirs, tmp_path):
    out = str(tmp_path / "b")
    train_ppo.main(PPO_FAST + ["--init-from", stage_dirs["sft"], "--reward", "builtin", "--max-steps", "1",
                               "--eval-interval", "1", "--out-dir", out])
    train = [r for r in rows(out) if "pg_loss" in r]
    assert train[0]["reward"] == pytest.approx(train[0]["accuracy"])  # reward 1 for a correct answer, else 0


def test_ppo_without_a_reward_model_says_what_to_run(stage_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="python train_reward.py --config tiny"):
        train_ppo.parse_args(["--init-from", stage_dirs["sft"], "--reward-model", str(tmp_path / "none")])
    with pytest.raises(ValueError, match="holds a language model, not a reward model"):  # its head would be random
        train_ppo.main(PPO_FAST + ["--init-from", stage_dirs["sft"], "--reward-model", stage_dirs["sft"],
                                   "--out-dir", str(tmp_path / "ppo")])
    other = shutil.copytree(stage_dirs["reward"], tmp_path / "other_tokenizer")
    BPETokenizer.train(["the fox jumps over the lazy dog"] * 20, 300, verbose=False).save(str(other / "tokenizer.json"))
    with pytest.raises(ValueError, match="trained with another tokenizer"):  # its token ids would mean other text
        train_ppo.main(PPO_FAST + ["--init-from", stage_dirs["sft"], "--reward-model", str(other),
                                   "--out-dir", str(tmp_path / "ppo")])


def test_no_adaptive_kl_keeps_the_coefficient_fixed(stage_dirs, tmp_path):
    out = str(tmp_path / "fixed")
    train_ppo.main(PPO_FAST + ["--init-from", stage_dirs["sft"], "--reward-model", stage_dirs["reward"], "--max-steps", "2",
                               "--eval-interval", "2", "--no-adaptive-kl", "--kl-coef", "0.3", "--out-dir", out])
    assert [r["kl_coef"] for r in rows(out) if "pg_loss" in r] == [0.3, 0.3]


def test_ppo_runs_under_torchrun_with_two_processes(stage_dirs, tmp_path):
    out = str(tmp_path / "ddp")
    torchrun("train_ppo.py", [*PPO_FAST, "--init-from", stage_dirs["sft"], "--reward-model", stage_dirs["reward"],
                              "--max-steps", "2", "--eval-interval", "2", "--num-threads", "1", "--device", "cpu", "--out-dir", out])
    assert [r["step"] for r in rows(out) if "pg_loss" in r] == [1, 2]


def test_adaptive_kl_moves_the_coefficient_toward_the_target(stage_dirs, tmp_path):
    """Ziegler et al.'s controller: KL over the target raises the penalty, under it lowers it, by the relative error
    clipped to +-20% per horizon of samples; in a run, KL far under the target lowers it step after step."""
    assert adaptive_kl_coef(0.2, 6.0, 3.0, 64, 640) == pytest.approx(0.2 * (1 + 0.2 * 0.1))    # over: clipped at +20%
    assert adaptive_kl_coef(0.2, 3.3, 3.0, 64, 640) == pytest.approx(0.2 * (1 + 0.1 * 0.1))    # 10% over
    assert adaptive_kl_coef(0.2, 0.0, 3.0, 640, 640) == pytest.approx(0.2 * 0.8)               # under: -20%
    assert adaptive_kl_coef(0.2, 3.0, 3.0, 64, 640) == pytest.approx(0.2)                      # on target
    out = str(tmp_path / "under")
    train_ppo.main(PPO_FAST + ["--init-from", stage_dirs["sft"], "--reward", "builtin", "--max-steps", "3",
                               "--eval-interval", "3", "--target-kl", "1000", "--kl-horizon", "16", "--out-dir", out])
    # 8 samples a step over a horizon of 16: KL (a few nats at most) is far under 1000, so -20% x 8/16 each step
    assert [r["kl_coef"] for r in rows(out) if "pg_loss" in r] == pytest.approx([0.2 * 0.9, 0.2 * 0.9 ** 2, 0.2 * 0.9 ** 3])
