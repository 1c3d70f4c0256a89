"""Exercise 10: DPO. Compared with train_dpo.dpo_loss (losses, rewards, gradients), then put into train_dpo.py: the same
run as the project's."""
import torch

import train_dpo
from harness import FAST, expect_close, gradients, leaves, load, same_run_as_the_projects


def test_dpo_loss_values_rewards_and_gradients_equal_the_projects():
    dpo = load("dpo_loss")
    torch.manual_seed(0)
    logps = [-torch.rand(8) * 30 for _ in range(4)]  # summed log-probs of whole responses: negative, tens
    for beta in (0.1, 0.5):
        mine = dpo.dpo_loss(*logps, beta)
        theirs = train_dpo.dpo_loss(*logps, beta)
        for name, a, b in zip(("losses", "chosen_rewards", "rejected_rewards"), mine, theirs):
            expect_close(a, b, f"{name} (beta {beta})")
        my_out, my_grads = gradients(lambda pc, pr: dpo.dpo_loss(pc, pr, logps[2], logps[3], beta)[0], *leaves(*logps[:2]))
        their_out, their_grads = gradients(lambda pc, pr: train_dpo.dpo_loss(pc, pr, logps[2], logps[3], beta)[0],
                                           *leaves(*logps[:2]))
        expect_close(my_grads[0], their_grads[0], f"gradient with respect to policy_chosen (beta {beta})")
        expect_close(my_grads[1], their_grads[1], f"gradient with respect to policy_rejected (beta {beta})")


def test_dpo_loss_worked_example():
    dpo = load("dpo_loss")
    losses, chosen, rejected = dpo.dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                                            torch.tensor([-2.0]), 0.1)
    expect_close(losses, [0.598139], "loss for policy -1/-3, reference -2/-2, beta 0.1 (-log sigmoid(0.2))")
    expect_close(torch.stack([chosen, rejected]).flatten(), [0.1, -0.1], "implicit rewards (+0.1 and -0.1)")
    pc = torch.tensor([-1.0], requires_grad=True)
    _, chosen, _ = dpo.dpo_loss(pc, torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), 0.1)
    assert not chosen.requires_grad, "the implicit rewards are for logging: return them detached"


def test_dpo_loss_in_train_dpo_gives_the_projects_run(monkeypatch, tmp_path, request):
    dpo = load("dpo_loss")
    dpo.dpo_loss(*[torch.zeros(1)] * 4, 0.1)
    chain = request.getfixturevalue("chain")
    argv = FAST + ["--max-steps", "6", "--eval-interval", "3", "--init-from", chain["sft"], "--eval-max-new-tokens", "4"]
    mine = lambda pc, pr, rc, rr, beta, loss_type="sigmoid", label_smoothing=0.0: dpo.dpo_loss(pc, pr, rc, rr, beta)
    same_run_as_the_projects(monkeypatch, tmp_path, train_dpo, argv, [(train_dpo, "dpo_loss", mine)],
                             keys=("loss", "val_loss"))
