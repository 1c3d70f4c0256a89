"""DPO: the loss against hand computations, response-only masking, the cached reference, and the loop."""
import json
import math
import os

import pytest
import torch

import train_dpo
from conftest import FAST
from data import PairDataset, pair_batch, response_targets
from model import MiniGPT, get_config, token_logprobs
from tokenizer import BPETokenizer
from train_dpo import dpo_loss, sequence_logprobs

PC, PR, RC, RR = torch.tensor([-5.0, -8.0]), torch.tensor([-7.0, -6.0]), torch.tensor([-6.0, -7.0]), torch.tensor([-6.5, -6.5])


def test_sigmoid_loss_matches_hand_computation():
    losses, chosen, rejected = dpo_loss(PC, PR, RC, RR, beta=0.1)
    h = [(-5 + 6) - (-7 + 6.5), (-8 + 7) - (-6 + 6.5)]  # 1.5, -1.5
    assert losses.tolist() == pytest.approx([math.log(1 + math.exp(-0.1 * v)) for v in h])
    assert chosen.tolist() == pytest.approx([0.1, -0.1]) and rejected.tolist() == pytest.approx([-0.05, 0.05])


def test_label_smoothing_and_ipo_match_hand_computation():
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, label_smoothing=0.2)
    assert losses[0].item() == pytest.approx(-0.8 * math.log(sig(0.15)) - 0.2 * math.log(sig(-0.15)))
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="ipo")
    assert losses.tolist() == pytest.approx([(1.5 - 1.0) ** 2, (-1.5 - 1.0) ** 2])


def test_policy_equal_to_reference_gives_log2_and_zero_margin():
    logps = torch.tensor([-3.0, -9.0])
    losses, chosen, rejected = dpo_loss(logps, logps.flip(0), logps, logps.flip(0), beta=0.1)
    assert losses.tolist() == pytest.approx([math.log(2)] * 2) and (chosen - rejected).abs().max() == 0


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(["What is 2 plus 3? 2 plus 3 is 5. I don't know."] * 3, 300, verbose=False)


def test_masking_scores_exactly_the_response_tokens(tok):
    pairs = [{"prompt": [{"role": "user", "content": "What is 2 plus 3?"}], "chosen": "2 plus 3 is 5.", "rejected": "I don't know."}]
    ds = PairDataset(pairs * 2, tok, seq_len=64)
    ids, lengths, prompt_lengths = pair_batch(ds, [0, 1], tok.pad_id)
    x, y, mask = response_targets(ids, lengths, prompt_lengths)
    assert tok.decode(y[0][mask[0] == 1].tolist()) == "2 plus 3 is 5.<|im_end|>"
    assert tok.decode(y[2][mask[2] == 1].tolist()) == "I don't know.<|im_end|>"
    model = MiniGPT(get_config("tiny", vocab_size=tok.vocab_size)).eval()
    with torch.no_grad():
        total = sequence_logprobs(model, ids, lengths, prompt_lengths)
        per_token = token_logprobs(model(ids[:, :-1]).logits, ids[:, 1:])
    p = int(prompt_lengths[0])  # first response token sits at ids[p], predicted at position p - 1
    assert total[0].item() == pytest.approx(per_token[0, p - 1:int(lengths[0]) - 1].sum().item(), rel=1e-5)
    # changing a prompt token's prediction target cannot change the score: only response positions count
    assert mask[0, :p - 1].sum() == 0 and mask[0, int(lengths[0]) - 1:].sum() == 0


def rows(d):
    return [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]


def test_dpo_run_logs_trl_metrics_and_precomputed_reference_matches_live_one(stage_dirs, tmp_path):
    live, cached = str(tmp_path / "live"), str(tmp_path / "cached")
    common = FAST + ["--init-from", stage_dirs["sft"], "--max-steps", "4", "--eval-interval", "4", "--eval-max-new-tokens", "4"]
    train_dpo.main(common + ["--out-dir", live])
    train_dpo.main(common + ["--out-dir", cached, "--precompute-ref"])
    first = next(r for r in rows(live) if "eval_loss" in r)
    assert first["step"] == 0 and first["eval_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert first["eval_rewards/margins"] == pytest.approx(0, abs=1e-4)
    train = [r for r in rows(live) if "rewards/chosen" in r and "eval_loss" not in r]
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected"} <= set(train[0])
    assert "pass_rate" in rows(live)[0]
    losses = lambda d: [r["loss"] for r in rows(d) if "rewards/chosen" in r and "eval_loss" not in r]  # noqa: E731
    assert losses(live) == pytest.approx(losses(cached), abs=1e-5)


def test_rpo_term_is_the_chosen_responses_nll_per_token():
    # summed log-probs -4 and -2 over 2 + 2 chosen tokens: NLL per token = 6 / 4
    assert train_dpo.chosen_nll(torch.tensor([-4.0, -2.0]), torch.tensor([2, 2])).item() == pytest.approx(1.5)
    assert train_dpo.chosen_nll(torch.tensor([-2.0, -1.0]), torch.tensor([1, 1]), average=True).item() == pytest.approx(1.5)


def test_rpo_alpha_adds_the_nll_and_keeps_chosen_likelihood_higher(stage_dirs, tmp_path):
    common = FAST + ["--init-from", stage_dirs["sft"], "--max-steps", "6", "--eval-interval", "6", "--eval-max-new-tokens", "2",
                     "--lr", "1e-3", "--precompute-ref"]
    plain, rpo = str(tmp_path / "plain"), str(tmp_path / "rpo")
    train_dpo.main(common + ["--out-dir", plain, "--rpo-alpha", "0"])  # plain DPO (the default is 1)
    train_dpo.main(common + ["--out-dir", rpo, "--rpo-alpha", "1.0"])
    trained = [r for r in rows(rpo) if "nll_loss" in r]
    assert len(trained) == 6 and all(r["nll_loss"] > 0 for r in trained)
    assert not any("nll_loss" in r for r in rows(plain))
    last = lambda d: [r for r in rows(d) if "eval_logps/chosen" in r][-1]["eval_logps/chosen"]  # noqa: E731
    assert last(rpo) > last(plain)  # the NLL term holds the chosen answers' likelihood up


def test_dpo_resume_is_exact(stage_dirs, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = FAST + ["--init-from", stage_dirs["sft"], "--eval-interval", "2", "--lr-decay-steps", "4",
                     "--loss-type", "ipo", "--eval-max-new-tokens", "2"]
    train_dpo.main(common + ["--max-steps", "4", "--out-dir", a])
    train_dpo.main(common + ["--max-steps", "2", "--out-dir", b])
    train_dpo.main(common + ["--max-steps", "4", "--out-dir", b, "--resume"])
    losses = lambda d: {r["step"]: r["loss"] for r in rows(d) if "rewards/chosen" in r and "eval_loss" not in r}  # noqa: E731
    assert losses(a) == losses(b) and len(losses(a)) == 4


def test_best_checkpoint_is_a_trained_step_and_a_metric_that_never_improved_is_said(stage_dirs, tmp_path, capsys):
    """Held-out pairs that prefer the opposite of the training pairs: the held-out loss only rises. ckpt_best.pt used
    to stay the step-0 (SFT) model, so generate.py printed the SFT model's answers after a DPO run."""
    pairs = lambda chosen, rejected: "".join(json.dumps({"prompt": f"Is {i} a number?", "chosen": chosen,  # noqa: E731
                                                         "rejected": rejected}) + "\n" for i in range(24))
    (tmp_path / "train.jsonl").write_text(pairs("Yes, it is.", "No, it is not."))
    (tmp_path / "val.jsonl").write_text(pairs("No, it is not.", "Yes, it is."))
    out = str(tmp_path / "run")
    train_dpo.main(FAST + ["--init-from", stage_dirs["sft"], "--data", str(tmp_path / "train.jsonl"), "--val-data",
                           str(tmp_path / "val.jsonl"), "--max-steps", "6", "--eval-interval", "3", "--lr", "1e-3",
                           "--precompute-ref", "--out-dir", out])
    done = capsys.readouterr().out.strip().splitlines()[-1]
    assert "held-out DPO loss" in done and "it never improved on step 0's 0.6931 (the model training started from)" in done
    assert torch.load(os.path.join(out, "ckpt_best.pt"), weights_only=True)["step"] in (3, 6)
    assert not any("pass_rate" in r for r in rows(out))  # no built-in questions for a model of other data
