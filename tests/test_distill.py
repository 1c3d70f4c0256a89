"""Distillation: the KL term (forward, reverse, top-k), the loss that is logged, the precomputed top-k path against
the live teacher, a student without a teacher as the baseline, chat data, exact resume and one-line errors."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

import train_distill
from conftest import FAST, torchrun


def test_kl_is_zero_between_equal_distributions_and_matches_its_formula():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 11), torch.randn(2, 3, 11)
    assert train_distill.kd_per_position(teacher, teacher, 2.0).abs().max() < 1e-6
    p, q = F.softmax(teacher / 2, -1), F.softmax(student / 2, -1)
    forward = train_distill.kd_per_position(student, teacher, 2.0, "forward")
    reverse = train_distill.kd_per_position(student, teacher, 2.0, "reverse")
    assert torch.allclose(forward, (p * (p.log() - q.log())).sum(-1), atol=1e-5)
    assert torch.allclose(reverse, (q * (q.log() - p.log())).sum(-1), atol=1e-5)
    assert not torch.allclose(forward, reverse)  # KL is not symmetric
    top = F.log_softmax(teacher / 2, -1).topk(11)  # all 11 tokens: the top-k path is the full KL
    for kind in ("forward", "reverse"):
        assert torch.allclose(train_distill.kd_per_position(student, (top.values, top.indices), 2.0, kind),
                              train_distill.kd_per_position(student, teacher, 2.0, kind), atol=1e-5)


def test_top_k_keeps_the_rest_of_the_mass_as_one_outcome():
    """With k < V the KL runs over k + 1 outcomes: the teacher's k tokens and "the rest". A student that puts the
    teacher's top-k mass on the rest must pay for it (renormalising over the k tokens alone made that free)."""
    torch.manual_seed(0)
    teacher = torch.randn(2, 3, 11)
    p = F.softmax(teacher, -1)
    top = p.log().topk(4)
    student = teacher.clone().scatter_(-1, top.indices, teacher.gather(-1, top.indices) - 3.0)  # same shape, less mass
    q = F.softmax(student, -1)
    coarse = lambda d: torch.cat([d.gather(-1, top.indices), 1 - d.gather(-1, top.indices).sum(-1, keepdim=True)], -1)
    pc, qc = coarse(p), coarse(q)
    got = train_distill.kd_per_position(student, (top.values, top.indices), 1.0, "forward")
    assert torch.allclose(got, (pc * (pc.log() - qc.log())).sum(-1), atol=1e-5)
    assert got.min() > 0.1  # the old renormalised top-k gave exactly 0 here: the shape over the k tokens is the same
    assert (got <= train_distill.kd_per_position(student, teacher, 1.0, "forward") + 1e-6).all()  # coarser: smaller


def rows(d):
    return [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]


DISTILL = FAST + ["--max-steps", "4", "--eval-interval", "2", "--alpha", "0.6", "--temperature", "1.5"]


def test_distillation_logs_the_loss_it_optimises_and_top_k_of_every_token_is_the_live_teacher(stage_dirs, tmp_path):
    live, topk = str(tmp_path / "live"), str(tmp_path / "topk")
    # 300 documents: --teacher-topk computes the teacher's top-k at every position of every training sample first
    teacher = ["--teacher", stage_dirs["pretrain"], "--data", "builtin:1:300"]
    train_distill.main(DISTILL + teacher + ["--out-dir", live])
    train_distill.main(DISTILL + teacher + ["--out-dir", topk, "--teacher-topk", "512"])  # the whole 512-token vocab
    trained = [r for r in rows(live) if "train_loss" in r]
    for r in trained:  # loss = alpha T^2 KL + (1 - alpha) CE
        assert r["train_loss"] == pytest.approx(0.6 * 1.5 ** 2 * r["kd_loss"] + 0.4 * r["ce_loss"], rel=1e-5)
    assert [r["kd_loss"] for r in rows(topk) if "kd_loss" in r] == pytest.approx([r["kd_loss"] for r in trained], rel=2e-3)
    for name in ("tokenizer.json", "config.json", "ckpt_best.pt", "ckpt_latest.pt"):
        assert os.path.isfile(os.path.join(live, name))
    assert open(os.path.join(live, "tokenizer.json")).read() == open(os.path.join(stage_dirs["pretrain"], "tokenizer.json")).read()


def test_without_a_teacher_the_same_student_starts_from_the_same_weights(stage_dirs, tmp_path):
    """--alpha 0 is the baseline distillation is measured against: the same initial model, the same batches."""
    with_teacher, without = str(tmp_path / "with"), str(tmp_path / "without")
    train_distill.main(DISTILL + ["--teacher", stage_dirs["pretrain"], "--out-dir", with_teacher])
    train_distill.main(DISTILL + ["--teacher", stage_dirs["pretrain"], "--out-dir", without, "--alpha", "0"])
    # step 0: the same student
    assert all(r["kd_loss"] == 0 for r in rows(without) if "kd_loss" in r)
    val = lambda d: [r["val_loss"] for r in rows(d) if "val_loss" in r]  # noqa: E731
    assert val(with_teacher)[0] == val(without)[0] and val(with_teacher)[1:] != val(without)[1:]


def test_distillation_on_chat_data_and_exact_resume(stage_dirs, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = FAST + ["--teacher", stage_dirs["sft"], "--init-from", stage_dirs["pretrain"], "--task", "sft",
                     "--eval-interval", "2", "--lr-decay-steps", "4", "--teacher-topk", "16", "--kd-loss", "reverse"]
    train_distill.main(common + ["--max-steps", "4", "--out-dir", a])
    train_distill.main(common + ["--max-steps", "2", "--out-dir", b])
    train_distill.main(common + ["--max-steps", "4", "--out-dir", b, "--resume"])
    losses = lambda d: {r["step"]: r["train_loss"] for r in rows(d) if "train_loss" in r}  # noqa: E731
    assert losses(a) == losses(b) and len(losses(a)) == 4
    assert "val_bpb" not in rows(a)[0]  # chat: the loss on assistant tokens, not bits per byte of text


def test_a_teacher_with_another_tokenizer_or_none_at_all_is_a_one_line_error(stage_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing: no teacher checkpoint"):
        train_distill.parse_args(["--teacher", str(tmp_path / "nothing")])
    other = tmp_path / "student"
    train_distill.main(DISTILL + ["--teacher", stage_dirs["pretrain"], "--out-dir", str(other), "--alpha", "0"])
    from tokenizer import BPETokenizer
    BPETokenizer.train(["a different corpus entirely"] * 3, 300, verbose=False).save(str(other / "tokenizer.json"))
    with pytest.raises(ValueError, match="student.*tokenizer differs from the teacher's"):
        train_distill.main(DISTILL + ["--teacher", stage_dirs["pretrain"], "--init-from", str(other),
                                      "--out-dir", str(tmp_path / "x")])


def test_distillation_ddp_two_processes_match_one_process_with_double_accumulation(stage_dirs, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    common = DISTILL + ["--teacher", stage_dirs["pretrain"], "--max-steps", "3", "--eval-interval", "3",
                        "--num-threads", "1", "--device", "cpu"]
    train_distill.main(common + ["--grad-accum", "2", "--out-dir", one])
    torchrun("train_distill.py", [*common, "--out-dir", two])
    train = lambda d: {r["step"]: (r["train_loss"], r["kd_loss"]) for r in rows(d) if "train_loss" in r}  # noqa: E731
    assert train(one).keys() == train(two).keys() and len(train(one)) == 3
    for step in train(one):
        assert train(one)[step] == pytest.approx(train(two)[step], abs=1e-4)
