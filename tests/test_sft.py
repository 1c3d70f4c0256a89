"""SFT: the assistant-only loss mask, truncation that keeps whole turns, augmentation, and the loop end to end."""
import json
import os
import re

import pytest
import torch

import train_sft
from conftest import FAST, torchrun
from data import DataError, SFTDataset, regression_suite, sft_batch, tokenize_conversation
from tokenizer import BPETokenizer

CONV = [{"role": "user", "content": "Where does Mira live?"}, {"role": "assistant", "content": "Mira lives in Oakvale."},
        {"role": "user", "content": "And Pip?"}, {"role": "assistant", "content": "Pip lives in Sunport."}]


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(["Mira lives in Oakvale. Pip lives in Sunport. Where does Mira live? And Pip?"] * 3, 300,
                              verbose=False)


def trained_text(tok, x, y, mask, row=0):
    return tok.decode(y[row][mask[row] == 1].tolist())


def test_sft_mask_covers_only_assistant_tokens(tok):
    ds = SFTDataset([CONV], tok, seq_len=128)
    x, y, mask = sft_batch(ds, [0], tok.pad_id)
    assert trained_text(tok, x, y, mask) == "Mira lives in Oakvale.<|im_end|>Pip lives in Sunport.<|im_end|>"
    assert torch.equal(x[0, 1:], y[0, :-1])  # targets are the inputs shifted by one
    first = int(mask[0].nonzero()[0])  # the first trained target follows the assistant header's newline
    assert tok.decode([int(x[0, first])]) == "\n" and tok.decode([int(y[0, first])]).startswith("M")


def test_padding_in_a_batch_carries_no_loss(tok):
    ds = SFTDataset([CONV, CONV[:2]], tok, seq_len=128)
    x, y, mask = sft_batch(ds, [0, 1], tok.pad_id)
    n = len(ds.samples[1][0]) - 1
    assert (y[1, n:] == tok.pad_id).all() and mask[1, n:].sum() == 0
    assert trained_text(tok, x, y, mask, row=1) == "Mira lives in Oakvale.<|im_end|>"


def test_truncation_keeps_whole_turns(tok):
    full = len(tok.apply_chat_template(CONV)[0])
    first_turn = len(tok.apply_chat_template(CONV[:2])[0])
    assert len(tokenize_conversation(CONV, tok, max_len=full - 1)[0]) == full - 1  # only the trailing newline goes
    ids, mask = tokenize_conversation(CONV, tok, max_len=full - 3)
    assert len(ids) == first_turn - 1  # cut right after the first reply's <|im_end|> (before its newline)
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "Mira lives in Oakvale.<|im_end|>"


def test_samples_with_no_assistant_token_within_seq_len_are_dropped_and_counted(tok):
    long_question = [{"role": "user", "content": "Where does Mira live? " * 40}, {"role": "assistant", "content": "Oakvale."}]
    ds = SFTDataset([long_question, CONV], tok, seq_len=32)
    assert ds.dropped == 1 and len(ds) == 1 and ds.stats()["dropped_no_assistant_token"] == 1


def test_turn_drop_augmentation_ends_on_an_earlier_assistant_reply(tok):
    import random
    ds = SFTDataset([CONV], tok, seq_len=128)
    ids, mask = ds.get(0, turn_drop_prob=1.0, rng=random.Random(0))
    assert tok.decode(ids.tolist()).endswith("Mira lives in Oakvale.<|im_end|>")
    assert len(ds.get(0, turn_drop_prob=0.0)[0]) == len(ds.samples[0][0])


def test_system_prompt_is_injected_without_loss(tok):
    ds = SFTDataset([CONV], tok, seq_len=128, system_prompt="Be brief.", system_prompt_prob=1.0)
    x, y, mask = sft_batch(ds, [0], tok.pad_id)
    assert tok.decode(x[0].tolist()).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "Be brief" not in trained_text(tok, x, y, mask) and ds.with_system_prompt == 1


def test_regression_suite_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "suite.jsonl"
    path.write_text('{"prompt": "2+2?", "expected": "4"}\n{"prompt": "x"}\n')
    with pytest.raises(DataError, match=r"suite.jsonl:2: field 'expected'"):
        regression_suite(str(path))
    path.write_text('{"prompt": "2+2?", "expected": "4"}\n')
    assert regression_suite(str(path)) == [("2+2?", "4")]


def test_missing_pretrain_run_names_the_command_to_run_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="python train_pretrain.py --config tiny"):
        train_sft.parse_args(["--init-from", str(tmp_path / "nothing")])


def test_resume_with_nothing_to_resume_names_the_whole_way_in_one_message(tmp_path, monkeypatch):
    """`train_sft.py --config small --resume` on a fresh clone gave two errors in a row, one per missing run."""
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here
    with pytest.raises(FileNotFoundError) as e:
        train_sft.parse_args(["--config", "tiny", "--resume"])
    assert re.fullmatch(r"--resume: checkpoints/sft_tiny holds no run to resume, and checkpoints/pretrain_tiny: no "
                        r"checkpoint to start from; run `python train_pretrain.py --config tiny` \(about [0-9.]+ (s|min|hours) "
                        r"here\), then `python train_sft.py --config tiny` \(without --resume\), or pass --init-from DIR",
                        str(e.value)), str(e.value)


def test_sft_on_your_own_data_does_not_grade_the_built_in_questions(stage_dirs, tmp_path):
    """SFT on Alpaca once graded and plotted the 71 built-in questions (pass rate 0.000 throughout)."""
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": f"Name a colour number {i}.", "input": "", "output": "Blue."}
                                for i in range(40)]))
    out = str(tmp_path / "own")
    train_sft.main(FAST + ["--init-from", stage_dirs["pretrain"], "--data", str(data), "--max-steps", "2",
                           "--eval-interval", "2", "--out-dir", out])
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 2] and not any("pass_rate" in r for r in rows)
    assert json.load(open(os.path.join(out, "dataset_stats.json")))["regression_suite"] == 0
    out2 = str(tmp_path / "asked")  # asked for by name, it is graded
    train_sft.main(FAST + ["--init-from", stage_dirs["pretrain"], "--data", str(data), "--max-steps", "2",
                           "--eval-interval", "2", "--out-dir", out2, "--eval-prompts", "builtin", "--eval-max-new-tokens", "2"])
    assert any("pass_rate" in json.loads(line) for line in open(os.path.join(out2, "metrics.jsonl")))


def test_sft_run_logs_pass_rate_and_resumes_exactly(stage_dirs, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = FAST + ["--init-from", stage_dirs["pretrain"], "--eval-interval", "4", "--lr-decay-steps", "8",
                     "--turn-drop-prob", "0.5", "--eval-max-new-tokens", "4"]
    train_sft.main(common + ["--max-steps", "8", "--out-dir", a])
    train_sft.main(common + ["--max-steps", "4", "--out-dir", b])
    train_sft.main(common + ["--max-steps", "8", "--out-dir", b, "--resume"])
    rows = [json.loads(line) for line in open(os.path.join(a, "metrics.jsonl"))]
    assert [r["step"] for r in rows if "pass_rate" in r] == [0, 4, 8]
    train = lambda d: {r["step"]: r["train_loss"] for r in map(json.loads, open(os.path.join(d, "metrics.jsonl"))) if "train_loss" in r}  # noqa: E731
    assert train(a) == train(b) and len(train(a)) == 8
    stats = json.load(open(os.path.join(a, "dataset_stats.json")))
    assert stats["train"]["samples"] > 0 and stats["regression_suite"] > 0
    for name in ("tokenizer.json", "config.json", "ckpt_best.pt", "ckpt_latest.pt"):
        assert os.path.isfile(os.path.join(a, name))


def test_sft_inspect_shows_the_loss_mask(stage_dirs, tmp_path, capsys):
    train_sft.main(FAST + ["--init-from", stage_dirs["pretrain"], "--out-dir", str(tmp_path / "i"), "--inspect"])
    out = capsys.readouterr().out
    assert "trained-on text of the first sample" in out and "<|im_end|>" in out and "one optimizer step done" in out


def test_sft_ddp_two_processes_match_one_process_with_double_accumulation(stage_dirs, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    common = FAST + ["--init-from", stage_dirs["pretrain"], "--max-steps", "3", "--eval-interval", "3",
                     "--num-threads", "1", "--eval-max-new-tokens", "2", "--device", "cpu"]
    train_sft.main(common + ["--grad-accum", "2", "--out-dir", one])
    torchrun("train_sft.py", [*common, "--out-dir", two])
    train = lambda d: {r["step"]: r["train_loss"] for r in map(json.loads, open(os.path.join(d, "metrics.jsonl"))) if "train_loss" in r}  # noqa: E731
    assert train(one).keys() == train(two).keys() and len(train(one)) == 3
    for step in train(one):
        assert train(one)[step] == pytest.approx(train(two)[step], abs=1e-4)
