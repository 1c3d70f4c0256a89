"""LoRA (--lora-rank on train_sft.py and train_dpo.py): adapters only train and only they are saved; a LoRA run
directory reads like any other (merged on load); merging changes no logit; PEFT loads our adapters onto the exported
base model with the same logits."""
import json
import math
import os

import pytest
import torch

import train_dpo
import train_sft
from conftest import FAST, torchrun
from export_hf import export, export_peft_adapter, merge_lora_run
from generate import GenerationConfig, load_generator
from model import MiniGPT, add_lora, get_config, load_model, lora_disabled, merge_lora
from train_utils import read_metrics


@torch.no_grad()
def test_merged_adapters_give_the_unmerged_logits():
    torch.manual_seed(0)
    model = MiniGPT(get_config("tiny", vocab_size=300)).eval()
    x = torch.randint(0, 300, (2, 24))
    base = model(x).logits
    add_lora(model, rank=4, alpha=8, targets=["q", "v", "o", "up", "down"])
    assert torch.equal(model(x).logits, base)  # B starts at zero: training starts from the base model exactly
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.normal_(0, 0.2)
    adapted = model(x).logits
    assert (adapted - base).abs().max() > 0.1
    with lora_disabled(model):
        assert torch.equal(model(x).logits, base)
    merge_lora(model)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert torch.allclose(model(x).logits, adapted, atol=1e-5)


def test_only_the_adapters_train_and_are_saved(stage_dirs, tmp_path, capsys):
    out = str(tmp_path / "lora")
    train_sft.main(FAST + ["--init-from", stage_dirs["pretrain"], "--out-dir", out, "--max-steps", "4", "--eval-interval",
                           "4", "--lora-rank", "4", "--lr", "1e-2", "--eval-max-new-tokens", "4"])
    printed = capsys.readouterr().out
    assert "LoRA rank 4, alpha 16 on q,k,v,o,gate,up,down:" in printed and "% of" in printed
    ckpt = torch.load(os.path.join(out, "ckpt_latest.pt"), weights_only=True)
    assert ckpt["model"] and all(".lora_A." in k or ".lora_B." in k for k in ckpt["model"])
    assert ckpt["lora"]["rank"] == 4 and ckpt["lora"]["base"]["run_dir"] == os.path.abspath(stage_dirs["pretrain"])
    state = ckpt["optimizer"]["state"]
    assert sum(s["exp_avg"].numel() for s in state.values()) == sum(t.numel() for t in ckpt["model"].values())
    full = torch.load(os.path.join(stage_dirs["sft"], "ckpt_latest.pt"), weights_only=True)
    assert os.path.getsize(os.path.join(out, "ckpt_latest.pt")) < os.path.getsize(os.path.join(stage_dirs["sft"], "ckpt_latest.pt")) / 2
    base, tuned = load_model(stage_dirs["pretrain"]), load_model(out, which="latest")
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all(k.split(".")[-2] in ("qkv", "proj", "gate_up", "down") for k in changed)  # only adapted ones
    assert set(full["model"]) == set(tuned.state_dict())  # merged on load: a plain model


def test_a_lora_run_directory_is_read_like_any_other_and_merges_into_one(stage_dirs, tmp_path):
    out = str(tmp_path / "lora")
    train_sft.main(FAST + ["--init-from", stage_dirs["pretrain"], "--out-dir", out, "--max-steps", "3", "--eval-interval",
                           "3", "--lora-rank", "4", "--lr", "1e-2", "--eval-max-new-tokens", "4"])
    cfg = GenerationConfig(max_new_tokens=8, greedy=True)
    answer = load_generator(out).generate("Where does Mira live?", cfg, chat=True)
    merged = merge_lora_run(out, str(tmp_path / "merged"))
    assert load_generator(merged).generate("Where does Mira live?", cfg, chat=True) == answer
    x = torch.randint(0, 300, (1, 16))
    assert torch.equal(load_model(merged)(x).logits, load_model(out)(x).logits)
    dpo = str(tmp_path / "dpo")  # a later stage starts from it too
    train_dpo.main(FAST + ["--init-from", out, "--out-dir", dpo, "--max-steps", "1", "--eval-interval", "1",
                           "--eval-max-new-tokens", "2"])


def train_losses(run_dir):
    """{step: train_loss} from a run's metrics.jsonl."""
    return {r["step"]: r["train_loss"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if "train_loss" in r}


def test_lora_resume_is_exact(stage_dirs, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = FAST + ["--init-from", stage_dirs["pretrain"], "--eval-interval", "2", "--lr-decay-steps", "4", "--lora-rank",
                     "4", "--lora-dropout", "0.1", "--eval-max-new-tokens", "2"]
    train_sft.main(common + ["--max-steps", "4", "--out-dir", a])
    train_sft.main(common + ["--max-steps", "2", "--out-dir", b])
    train_sft.main(common + ["--max-steps", "4", "--out-dir", b, "--resume"])
    assert train_losses(a) == train_losses(b) and len(train_losses(a)) == 4


def test_lora_ddp_two_processes_match_one_process_with_double_accumulation(stage_dirs, tmp_path):
    """DDP with a frozen base: only the adapters are reduced across ranks, and the steps equal one process's."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    common = FAST + ["--init-from", stage_dirs["pretrain"], "--max-steps", "3", "--eval-interval", "3", "--lora-rank", "4",
                     "--num-threads", "1", "--eval-max-new-tokens", "2", "--device", "cpu"]
    train_sft.main(common + ["--grad-accum", "2", "--out-dir", one])
    torchrun("train_sft.py", [*common, "--out-dir", two])
    assert train_losses(one).keys() == train_losses(two).keys() and len(train_losses(one)) == 3
    for step in train_losses(one):
        assert train_losses(one)[step] == pytest.approx(train_losses(two)[step], abs=1e-4)
    ckpt = torch.load(os.path.join(two, "ckpt_latest.pt"), weights_only=True)
    assert ckpt["lora"]["rank"] == 4 and all(".lora_A." in k or ".lora_B." in k for k in ckpt["model"])  # no "module."


def test_dpo_with_lora_uses_the_policy_without_adapters_as_its_reference(stage_dirs, tmp_path):
    out = str(tmp_path / "dpo")
    train_dpo.main(FAST + ["--init-from", stage_dirs["sft"], "--out-dir", out, "--max-steps", "3", "--eval-interval", "3",
                           "--lora-rank", "4", "--lr", "1e-2", "--eval-max-new-tokens", "2"])
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    first, last = [r for r in rows if "eval_loss" in r][0], [r for r in rows if "eval_loss" in r][-1]
    assert first["eval_loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at the start
    assert last["eval_rewards/margins"] != pytest.approx(0, abs=1e-6)  # the adapters moved the policy away from it
    assert all(".lora_" in k for k in torch.load(os.path.join(out, "ckpt_best.pt"), weights_only=True)["model"])


def test_a_base_that_changed_after_the_adapters_were_trained_is_refused(stage_dirs, tmp_path):
    import shutil
    base, out = str(tmp_path / "base"), str(tmp_path / "lora")
    shutil.copytree(stage_dirs["pretrain"], base)
    train_sft.main(FAST + ["--init-from", base, "--out-dir", out, "--max-steps", "1", "--eval-interval", "1",
                           "--lora-rank", "2", "--eval-max-new-tokens", "2"])
    ckpt = torch.load(os.path.join(base, "ckpt_best.pt"), weights_only=True)
    torch.save({**ckpt, "step": ckpt["step"] + 100}, os.path.join(base, "ckpt_best.pt"))
    with pytest.raises(ValueError, match=r"its base .*base/ckpt_best.pt is now step \d+, but the adapters were trained on step"):
        load_model(out)
    shutil.rmtree(base)
    with pytest.raises(FileNotFoundError, match=r"the base model of these adapters, .* is not there"):
        load_model(out)


@pytest.mark.parametrize("flags,message", [
    (["--lora-rank", "4", "--lora-targets", "q,wq"], "--lora-targets: unknown wq; choose from q, k, v, o, gate, up, down"),
    (["--lora-rank", "-1"], "--lora-rank must be at least 0, got -1"),
    (["--lora-rank", "4", "--lora-alpha", "0"], "--lora-alpha must be above 0, got 0.0"),
])
def test_bad_lora_flags_are_one_line_errors(stage_dirs, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        train_sft.main(FAST + ["--init-from", stage_dirs["pretrain"], "--out-dir", str(tmp_path / "x"), *flags])


def test_peft_loads_our_adapters_onto_the_exported_base_with_the_same_logits(stage_dirs, tmp_path):
    peft = pytest.importorskip("peft", reason="optional: pip install -r requirements-extras.txt")
    transformers = pytest.importorskip("transformers", reason="optional: pip install -r requirements-extras.txt")
    out = str(tmp_path / "lora")
    train_sft.main(FAST + ["--init-from", stage_dirs["pretrain"], "--out-dir", out, "--max-steps", "3", "--eval-interval",
                           "3", "--lora-rank", "4", "--lora-alpha", "8", "--lr", "2e-2", "--eval-max-new-tokens", "2"])
    base_dir = export(stage_dirs["pretrain"], str(tmp_path / "hf_base"))
    adapter_dir = export_peft_adapter(out, str(tmp_path / "hf_adapter"))
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tuned = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
    ids = torch.tensor([[1] + list(range(40, 70))])
    with torch.no_grad():
        theirs, ours = tuned(ids).logits, load_model(out)(ids).logits
        assert torch.allclose(theirs, ours, atol=1e-4)
        with tuned.disable_adapter():
            assert not torch.allclose(tuned(ids).logits, ours, atol=1e-3)  # the adapters are what makes it match


@pytest.mark.parametrize("script, full_lr", [(train_sft, 5e-4), (train_dpo, 1e-4)])
def test_lora_defaults_to_four_times_the_full_model_lr_and_an_explicit_lr_wins(script, full_lr, stage_dirs):
    init = ["--init-from", stage_dirs["pretrain"] if script is train_sft else stage_dirs["sft"]]
    assert script.parse_args(init).lr == pytest.approx(full_lr)
    lora = script.parse_args(init + ["--lora-rank", "8"])
    assert lora.lr == pytest.approx(4 * full_lr) and lora.min_lr == pytest.approx(0.4 * full_lr)
    assert script.parse_args(init + ["--lora-rank", "8", "--lr", "1e-3"]).lr == 1e-3
