"""Exercise 09: Bradley-Terry. Compared with train_reward.reward_loss (values, gradients, extreme values), then put
into train_reward.py: the same run as the project's."""
import math

import torch

import train_reward
from harness import FAST, expect_close, gradients, leaves, load, same_run_as_the_projects


def test_reward_loss_values_and_gradients_equal_the_projects():
    rm = load("reward_loss")
    chosen, rejected = torch.randn(16) * 3, torch.randn(16) * 3
    for margin in (0.0, 0.5):
        mine, my_grads = gradients(lambda c, r: rm.reward_loss(c, r, margin), *leaves(chosen, rejected))
        theirs, their_grads = gradients(lambda c, r: train_reward.reward_loss(c, r, margin), *leaves(chosen, rejected))
        expect_close(mine, theirs, f"per-pair losses (margin {margin})")
        expect_close(my_grads[0], their_grads[0], f"gradient with respect to the chosen rewards (margin {margin})")
        expect_close(my_grads[1], their_grads[1], f"gradient with respect to the rejected rewards (margin {margin})")
    expect_close(rm.reward_loss(torch.zeros(1), torch.zeros(1)), [math.log(2)], "the loss of a tie (log 2)")


def test_reward_loss_stays_finite_for_a_confidently_wrong_model():
    rm = load("reward_loss")
    out = rm.reward_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    expect_close(out, [400.0], "loss for rewards -200 (chosen) vs 200 (rejected): use F.logsigmoid", rtol=1e-6)


def test_reward_loss_in_train_reward_gives_the_projects_run(monkeypatch, tmp_path, request):
    rm = load("reward_loss")
    rm.reward_loss(torch.zeros(1), torch.zeros(1))
    chain = request.getfixturevalue("chain")
    argv = FAST + ["--max-steps", "8", "--eval-interval", "4", "--init-from", chain["sft"]]
    same_run_as_the_projects(monkeypatch, tmp_path, train_reward, argv, [(train_reward, "reward_loss", rm.reward_loss)],
                             keys=("loss", "val_loss"))
