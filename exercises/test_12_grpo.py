"""Exercise 12: GRPO's group advantages. Compared with train_grpo.group_advantages, then put into train_grpo.py: the
same run as the project's."""
import torch

import train_grpo
from harness import FAST, expect_close, load, same_run_as_the_projects


def test_grpo_advantages_equal_the_projects():
    grpo = load("grpo")
    g = torch.Generator().manual_seed(0)
    for group_size in (2, 4, 8):
        rewards = torch.randint(0, 2, (5 * group_size,), generator=g).float()  # 0/1 rewards, some groups all equal
        for scale in (True, False):
            expect_close(grpo.group_advantages(rewards, group_size, scale),
                         train_grpo.group_advantages(rewards, group_size, scale)[0],
                         f"advantages (group_size {group_size}, scale={scale})")


def test_grpo_advantages_worked_example():
    grpo = load("grpo")
    expect_close(grpo.group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2, scale=False), [0.5, -0.5, 0.0, 0.0],
                 "advantages of rewards [1, 0, 0, 0] in groups of 2, unscaled")
    expect_close(grpo.group_advantages(torch.tensor([1.0, 1.0, 1.0]), 3), [0.0, 0.0, 0.0],
                 "advantages of a group whose answers all got the same reward")


def test_grpo_in_train_grpo_gives_the_projects_run(monkeypatch, tmp_path, request):
    grpo = load("grpo")
    grpo.group_advantages(torch.zeros(2), 2)
    chain = request.getfixturevalue("chain")
    argv = FAST + ["--prompts-per-step", "2", "--num-generations", "4", "--max-new-tokens", "6", "--eval-batch", "4",
                   "--micro-batch", "4", "--init-from", chain["sft"], "--max-steps", "4", "--eval-interval", "2"]

    def group_advantages(rewards, group_size, scale=True):  # yours, with the groups' std the run logs
        return grpo.group_advantages(rewards, group_size, scale), rewards.view(-1, group_size).std(dim=1)

    same_run_as_the_projects(monkeypatch, tmp_path, train_grpo, argv,
                             [(train_grpo, "group_advantages", group_advantages)], keys=("loss", "reward"))
