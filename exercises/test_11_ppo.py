"""Exercise 11: PPO's GAE and clipped loss. Compared with train_ppo.gae / policy_loss, then put into train_ppo.py:
the same run as the project's."""
import torch

import train_ppo
from harness import FAST, expect_close, gradients, leaves, load, same_run_as_the_projects

PROJECT_POLICY_LOSS = train_ppo.policy_loss  # kept before any patch: its clip statistics are logged beside yours


def response_mask(B, T, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T)
    for row in range(B):  # a contiguous response somewhere in each row, as a prompt + answer + padding gives
        start = int(torch.randint(0, T // 2, (1,), generator=g))
        mask[row, start:start + int(torch.randint(1, T - start + 1, (1,), generator=g))] = 1
    return mask


def test_ppo_gae_equals_the_projects():
    ppo = load("ppo")
    mask = response_mask(6, 10, 0)
    rewards, values = torch.randn(6, 10) * mask, torch.randn(6, 10)
    for gamma, lam in ((1.0, 1.0), (1.0, 0.95), (0.9, 0.8)):
        mine, theirs = ppo.gae(rewards, values, mask, gamma, lam), train_ppo.gae(rewards, values, mask, gamma, lam)
        expect_close(mine[0], theirs[0], f"advantages (gamma {gamma}, lam {lam})")
        expect_close(mine[1], theirs[1], f"returns (gamma {gamma}, lam {lam})")


def test_ppo_gae_worked_example_the_final_reward_reaches_back():
    ppo = load("ppo")
    advantages, _ = ppo.gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3), torch.ones(1, 3), 1.0, 1.0)
    expect_close(advantages, [[1.0, 1.0, 1.0]], "advantages of rewards [0, 0, 1], values 0, gamma = lam = 1")


def test_ppo_clipped_loss_and_gradient_equal_the_projects():
    ppo = load("ppo")
    mask = response_mask(4, 8, 1)
    old = -torch.rand(4, 8) * 3
    logprobs = old + torch.randn(4, 8) * 0.3  # ratios spread on both sides of the clip range
    advantages = torch.randn(4, 8)
    for cliprange in (0.2, 0.05):
        mine, my_grads = gradients(lambda lp: ppo.clipped_policy_loss(lp, old, advantages, mask, cliprange), *leaves(logprobs))
        theirs, their_grads = gradients(lambda lp: train_ppo.policy_loss(lp, old, advantages, mask, cliprange)[0],
                                        *leaves(logprobs))
        expect_close(mine, theirs, f"loss (cliprange {cliprange})")
        expect_close(my_grads[0], their_grads[0], f"gradient with respect to logprobs (cliprange {cliprange}): clipped "
                     "tokens get none")


def test_ppo_in_train_ppo_gives_the_projects_run(monkeypatch, tmp_path, request):
    ppo = load("ppo")
    ppo.gae(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), 1.0, 1.0)
    ppo.clipped_policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), 0.2)
    chain = request.getfixturevalue("chain")
    argv = FAST + ["--rollout-batch", "8", "--minibatch-size", "4", "--ppo-epochs", "2", "--max-new-tokens", "8",
                   "--eval-batch", "8", "--init-from", chain["sft"], "--reward-model", chain["reward"],
                   "--max-steps", "4", "--eval-interval", "2"]

    def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange):  # your loss, the project's statistics
        _, clipfrac, approx_kl = PROJECT_POLICY_LOSS(logprobs.detach(), old_logprobs, advantages, mask, cliprange)
        return ppo.clipped_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange), clipfrac, approx_kl

    same_run_as_the_projects(monkeypatch, tmp_path, train_ppo, argv,
                             [(train_ppo, "gae", ppo.gae), (train_ppo, "policy_loss", policy_loss)],
                             keys=("pg_loss", "value_loss", "reward"))
