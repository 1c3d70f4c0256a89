"""The pretraining loop end to end on the built-in data with a tiny model (seconds per test)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import common
import train_pretrain
import train_utils as tu
from conftest import torchrun
from generate import load_generator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--config", "tiny", "--batch-size", "4", "--seq-len", "32", "--eval-iters", "2", "--log-interval", "1",
        "--dtype", "float32", "--warmup-steps", "2", "--no-plot"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_DATA_DIR", str(tmp_path / "cache"))


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def losses(out):
    return {r["step"]: r["train_loss"] for r in metrics(out) if "train_loss" in r}


def test_pretrain_writes_a_complete_run_directory(tmp_path):
    out = str(tmp_path / "run")
    train_pretrain.main(FAST[:-1] + ["--max-steps", "8", "--eval-interval", "4", "--out-dir", out])
    for name in ("tokenizer.json", "config.json", "dataset_stats.json", "metrics.jsonl", "ckpt_latest.pt",
                 "ckpt_best.pt", "plots/loss_curve_latest.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    rows = metrics(out)
    assert {"val_loss", "val_ppl", "val_bpb", "memory_mb"} <= set(next(r for r in rows if "val_loss" in r))
    assert {"train_loss", "lr", "grad_norm", "tokens_per_sec"} <= set(next(r for r in rows if "train_loss" in r))
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert val[-1] < val[0]  # it learns
    ckpt = torch.load(os.path.join(out, "ckpt_latest.pt"), weights_only=True)
    assert ckpt["step"] == 8 and {"model", "optimizer", "rng", "model_config", "data_position"} <= set(ckpt)
    stats = json.load(open(os.path.join(out, "dataset_stats.json")))
    assert stats["sources"]["builtin"]["train"] > 0 and stats["train"]["tokens"] > 0
    assert stats["sources"]["builtin"]["train_tokens"] + stats["sources"]["builtin"]["val_tokens"] == \
        stats["train"]["tokens"] + stats["val"]["tokens"]
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["args"]["max_steps"] == 8 and config["model"]["dim"] == 128
    assert isinstance(load_generator(out).generate("Once", ), str)  # the next stage can read the run directory


def test_resume_is_exact(tmp_path):
    """N steps straight == N/2 steps, then --resume, then N/2 more: identical losses at every step."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = FAST + ["--lr-decay-steps", "8", "--eval-interval", "4"]
    train_pretrain.main(common + ["--max-steps", "8", "--out-dir", a])
    train_pretrain.main(common + ["--max-steps", "4", "--out-dir", b])
    train_pretrain.main(common + ["--max-steps", "8", "--out-dir", b, "--resume"])
    assert losses(a) == losses(b) and len(losses(a)) == 8
    assert [r["val_loss"] for r in metrics(a) if "val_loss" in r] == [r["val_loss"] for r in metrics(b) if "val_loss" in r]


def test_a_new_run_into_a_run_directory_is_refused_with_the_choices(tmp_path):
    """It used to replace ckpt_latest.pt and config.json and cut metrics.jsonl without a word."""
    out = str(tmp_path / "run")
    train_pretrain.main(FAST + ["--max-steps", "2", "--eval-interval", "2", "--out-dir", out])
    before = {n: open(os.path.join(out, n), "rb").read() for n in ("ckpt_latest.pt", "metrics.jsonl", "config.json")}
    with pytest.raises(ValueError, match=r"run: already holds a run \(ckpt_latest.pt, ckpt_best.pt, metrics.jsonl\); "
                                         r"continue it with --resume, start a new one beside it with --out-dir NEW, "
                                         r"or replace it with --overwrite"):
        train_pretrain.main(FAST + ["--max-steps", "4", "--out-dir", out])
    assert before == {n: open(os.path.join(out, n), "rb").read() for n in before}


def test_overwrite_reuses_the_tokenizer_and_token_cache_only_for_the_same_data(tmp_path, capsys):
    out = str(tmp_path / "run")
    train_pretrain.main(FAST + ["--max-steps", "1", "--out-dir", out])
    capsys.readouterr()
    train_pretrain.main(FAST + ["--max-steps", "1", "--out-dir", out, "--overwrite"])
    printed = capsys.readouterr()
    assert "tokenizer.json (already in --out-dir, trained on the same data and flags)" in printed.out
    assert "training a" not in printed.out and "tokenizing" not in printed.err
    other = tmp_path / "other.txt"  # other data: that folder's tokenizer would give it a bpb of 5.92 instead of 3.04
    other.write_text("\n\n".join(f"The lighthouse keeper counted {i} ships before dawn." for i in range(400)))
    train_pretrain.main(FAST + ["--max-steps", "1", "--out-dir", out, "--overwrite", "--data", str(other)])
    printed = capsys.readouterr().out
    assert "tokenizer.json was trained on other data or flags; training a new one" in printed
    assert "tokenizer: training a 2048-token tokenizer on up to 20000 documents of " + str(other) in printed
    assert json.load(open(os.path.join(out, "config.json")))["args"]["data"] == [str(other)]
    assert [r["step"] for r in metrics(out) if "val_loss" in r] == [0, 1]  # the old log went with the old run


def test_a_failed_run_leaves_no_run_folder_behind(tmp_path):
    out = tmp_path / "new_run"
    r = run_script(FAST + ["--data", str(tmp_path / "typo.txt"), "--out-dir", str(out), "--max-steps", "1"])
    assert r.returncode != 0 and "typo.txt: file not found" in r.stderr
    assert not out.exists()


def test_an_eta_is_printed_after_the_first_steps(tmp_path, capsys):
    train_pretrain.main(FAST + ["--max-steps", "12", "--eval-interval", "5", "--out-dir", str(tmp_path / "run")])
    line = next(l for l in capsys.readouterr().out.splitlines() if "steps left take about" in l)
    assert re.fullmatch(r"the first step began [0-9.]+ s after start; a step takes [0-9.]+ s, so the 10 steps left take "
                        r"about \d+ s, plus 3 evals of [0-9.]+ s: about \d+ s in all", line), line


def test_the_logged_train_loss_is_the_loss_that_is_optimised(tmp_path, monkeypatch):
    """A copied script that changes the loss changes what is logged: train_loss is the optimised `loss` variable."""
    runs, original = {}, train_pretrain.MiniGPT
    for name, extra in (("plain", 0.0), ("plus_three", 3.0)):
        class Model(original):  # a constant added to the loss: the same gradients, 3 more in the loss
            def forward(self, *args, added=extra, **kwargs):
                out = super().forward(*args, **kwargs)
                return out._replace(aux_loss=out.aux_loss + added)
        monkeypatch.setattr(train_pretrain, "MiniGPT", Model)
        train_pretrain.main(FAST + ["--max-steps", "2", "--eval-interval", "2", "--out-dir", str(tmp_path / name)])
        runs[name] = losses(str(tmp_path / name))
    assert runs["plus_three"][1] == pytest.approx(runs["plain"][1] + 3.0, abs=1e-5)


def test_inspect_shows_batch_and_gradient_norms(tmp_path, capsys):
    train_pretrain.main(FAST + ["--inspect", "--out-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "batch: input (4, 32)" in out and "grad norm embed" in out and "grad norm layers.0" in out
    assert "mask" in out and "one optimizer step done" in out


def run_script(args, **kw):
    return subprocess.run([sys.executable, "train_pretrain.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ}, **kw)


def test_bad_data_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 42}\n')
    r = run_script(FAST + ["--data", str(bad), "--out-dir", str(tmp_path / "run"), "--max-steps", "1"])
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == (f"error: {bad}:2: field 'text' should be str, got int (fix the record, "
                                                 f"or pass --skip-bad-lines to skip and count bad records)")
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("stage,flag,value,message", [
    ("pretrain", "--grad-accum", "0", "--grad-accum must be at least 1, got 0"),  # trained nothing and said done
    ("sft", "--batch-size", "0", "--batch-size must be at least 1, got 0"),
    ("reward", "--eval-interval", "0", "--eval-interval must be at least 1, got 0"),
    ("dpo", "--lr", "-1", "--lr must be above 0, got -1.0"),
    ("pretrain", "--val-split", "1", "--val-split must be below 1, got 1.0"),
    ("sft", "--system-prompt-prob", "2", "--system-prompt-prob must be at most 1, got 2.0"),
    ("dpo", "--beta", "0", "--beta must be above 0, got 0.0"),
    ("ppo", "--ppo-epochs", "0", "--ppo-epochs must be at least 1, got 0"),  # trained nothing and said done
    ("ppo", "--gamma", "2", "--gamma must be at most 1, got 2.0"),
    ("reward", "--max-prompt-len", "0", "--max-prompt-len must be at least 1, got 0"),  # an optional flag, when given
    ("sft", "--time-budget", "-1", "--time-budget must be above 0, got -1.0"),
])
def test_out_of_range_flags_are_refused_before_training(stage, flag, value, message):
    import importlib
    with pytest.raises(ValueError, match=message):
        importlib.import_module(f"train_{stage}").parse_args([flag, value])


def test_pretraining_cuts_its_cosine_halfway_unless_told():
    # the pipeline's later stages were measured from a model whose lr had not annealed (BENCHMARKS.md, issue 36)
    args = train_pretrain.parse_args(["--max-steps", "300"])
    assert args.lr_decay_steps == 600
    lr_at_end = tu.get_lr(300, args)
    assert args.min_lr < lr_at_end < args.lr and lr_at_end == pytest.approx((args.lr + args.min_lr) / 2, rel=0.15)  # (warmup)
    assert train_pretrain.parse_args(["--max-steps", "300", "--lr-decay-steps", "300"]).lr_decay_steps == 300
    assert tu.get_lr(300, train_pretrain.parse_args(["--max-steps", "300", "--lr-decay-steps", "300"])) == args.min_lr


def test_non_finite_losses_stop_the_run_with_a_clear_message(tmp_path):
    out = str(tmp_path / "run")
    r = run_script(FAST + ["--lr", "1e30", "--grad-clip", "0", "--warmup-steps", "0", "--max-steps", "30",
                           "--eval-interval", "100", "--max-bad-steps", "2", "--out-dir", out])
    assert r.returncode != 0 and "non-finite losses in a row" in r.stderr and "Traceback" not in r.stderr
    assert any("nonfinite_loss_steps" in row for row in metrics(out))
    torch.load(os.path.join(out, "ckpt_latest.pt"), weights_only=True)  # the step-0 checkpoint is intact


def _start_and_wait_for_checkpoint(tmp_path, extra):
    out = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "train_pretrain.py", *FAST, "--max-steps", "100000", "--out-dir", out,
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latest = os.path.join(out, "ckpt_latest.pt")
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(latest) and len(losses_or_empty(out)) >= 3):
        time.sleep(0.2)
    return proc, out, latest


def losses_or_empty(out):
    try:
        return losses(out)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(tmp_path):
    proc, out, latest = _start_and_wait_for_checkpoint(tmp_path, ["--eval-interval", "100000"])
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "resume with:" in stdout and "--resume" in stdout
    assert torch.load(latest, weights_only=True)["step"] >= 3


def test_kill_9_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    proc, out, latest = _start_and_wait_for_checkpoint(tmp_path, ["--save-interval", "1", "--eval-interval", "100000"])
    time.sleep(0.37)  # somewhere in the middle of writing another checkpoint, most likely
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(latest, weights_only=True)
    assert ckpt["step"] >= 1
    r = run_script(FAST + ["--max-steps", str(ckpt["step"] + 1), "--out-dir", out, "--resume"])
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_ddp_two_processes_match_one_process_with_double_accumulation(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    common = FAST + ["--max-steps", "4", "--eval-interval", "4", "--num-threads", "1", "--device", "cpu"]  # gloo, also where a GPU is
    train_pretrain.main(common + ["--grad-accum", "2", "--out-dir", one])
    torchrun("train_pretrain.py", [*common, "--grad-accum", "1", "--out-dir", two, "--tokenizer", os.path.join(one, "tokenizer.json")])
    l1, l2 = losses(one), losses(two)
    assert l1.keys() == l2.keys() and len(l1) == 4
    for step in l1:
        assert l1[step] == pytest.approx(l2[step], abs=1e-4)


def test_early_stopping_ends_the_run_when_validation_stops_improving(tmp_path, capsys):
    out = str(tmp_path / "run")
    # an absurd delta: no eval can improve "enough", so the run stops after `patience` evals
    train_pretrain.main(FAST + ["--max-steps", "50", "--eval-interval", "2", "--early-stop-patience", "2",
                                "--early-stop-delta", "100", "--out-dir", out])
    assert "early stop" in capsys.readouterr().out
    assert torch.load(os.path.join(out, "ckpt_latest.pt"), weights_only=True)["step"] == 4


def test_init_from_starts_from_another_runs_weights_and_tokenizer(tmp_path):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    train_pretrain.main(FAST + ["--max-steps", "6", "--eval-interval", "6", "--out-dir", first])
    train_pretrain.main(FAST + ["--max-steps", "1", "--eval-interval", "1", "--out-dir", second, "--init-from", first])
    assert open(os.path.join(first, "tokenizer.json")).read() == open(os.path.join(second, "tokenizer.json")).read()
    val = lambda d: [r["val_loss"] for r in metrics(d) if "val_loss" in r]
    assert val(second)[0] == pytest.approx(min(val(first)), abs=1e-6)  # step 0 of the second run = the best of the first


def test_model_override_and_time_budget(tmp_path, capsys):
    out = str(tmp_path / "run")
    train_pretrain.main(FAST + ["--model-override", "dim=64", "n_layers=2", "--max-steps", "100000",
                                "--time-budget", "2", "--eval-interval", "100000", "--out-dir", out])
    assert "time budget of 2s reached" in capsys.readouterr().out
    config = json.load(open(os.path.join(out, "config.json")))["model"]
    assert (config["dim"], config["n_layers"], config["ffn_hidden"]) == (64, 2, 192)
    with pytest.raises(ValueError, match="--model-override width=3"):
        train_pretrain.main(FAST + ["--model-override", "width=3", "--out-dir", str(tmp_path / "bad")])
    for item, message in (("dim=abc", "dim takes an integer"), ("tie_embeddings=maybe", "takes true or false"),
                          ("dropout=2", r"dropout \(2.0\) and attn_dropout \(0.0\) must be in \[0, 1\)")):
        with pytest.raises(ValueError, match=message):
            train_pretrain.main(FAST + ["--model-override", item, "--out-dir", str(tmp_path / "bad")])


def test_skip_bad_lines_trains_and_lists_them_in_dataset_stats(tmp_path):
    data = tmp_path / "d.jsonl"
    good = [json.dumps({"text": f"The fox number {i} runs to the river and back again."}) for i in range(200)]
    data.write_text("\n".join(good[:100] + ['{"text": 5}', "{oops"] + good[100:]) + "\n")
    out = str(tmp_path / "run")
    train_pretrain.main(FAST + ["--data", str(data), "--skip-bad-lines", "--vocab-size", "300", "--max-steps", "1",
                                "--out-dir", out])
    src = json.load(open(os.path.join(out, "dataset_stats.json")))["sources"][str(data)]
    assert src["skipped"] == 2 and src["skipped_lines"][0].startswith(f"{data}:101:")


def test_tensorboard_without_the_package_warns_and_trains(tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import tensorboard  # noqa: F401
        has_tb = True
    except ImportError:
        has_tb = False
    out = str(tmp_path / "run")
    train_pretrain.main(FAST + ["--tensorboard", "--max-steps", "2", "--eval-interval", "2", "--out-dir", out])
    if has_tb:
        assert os.listdir(os.path.join(out, "tensorboard"))
    else:
        assert "--tensorboard needs the tensorboard package" in capsys.readouterr().out


def test_plot_runs_draws_several_runs(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for d in (a, b):
        train_pretrain.main(FAST + ["--max-steps", "2", "--eval-interval", "2", "--out-dir", d])
    with open(os.path.join(b, "metrics.jsonl"), "a") as f:
        f.write('{"step": 3, "train_lo')  # the torn last line of a run killed mid-write
    # a bare --out name, as the README writes it, lands in the current folder
    r = subprocess.run([sys.executable, os.path.join(ROOT, "plot_runs.py"), a, b, "--out", "cmp.png"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0 and os.path.getsize(tmp_path / "cmp.png") > 1000, r.stderr
    assert r.stderr.count("skipped 1 line(s) that are not JSON (line ") == 1
    r = subprocess.run([sys.executable, "plot_runs.py", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "no metrics.jsonl" in r.stderr


def test_resuming_another_directory_s_checkpoint_forks_the_run_and_another_stage_s_is_refused(tmp_path):
    import train_sft
    from train_utils import read_metrics
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train_pretrain.main(FAST + ["--max-steps", "2", "--eval-interval", "2", "--out-dir", a])
    # into a new --out-dir: the log comes along (its summary failed on a missing metrics.jsonl)
    train_pretrain.main(FAST + ["--max-steps", "3", "--eval-interval", "2", "--out-dir", b, "--resume", f"{a}/ckpt_latest.pt"])
    steps = [r["step"] for r in read_metrics(os.path.join(b, "metrics.jsonl")) if "val_loss" in r]
    assert steps == [0, 2, 3]
    with pytest.raises(ValueError, match="a pretrain checkpoint, and --resume continues a sft run; .* --init-from"):
        train_sft.main(FAST + ["--init-from", a, "--out-dir", str(tmp_path / "c"), "--resume", f"{a}/ckpt_latest.pt"])
    ckpt = torch.load(f"{a}/ckpt_latest.pt", weights_only=True)
    del ckpt["optimizer"]
    torch.save(ckpt, f"{a}/ckpt_latest.pt")  # was KeyError: 'optimizer'
    with pytest.raises(ValueError, match="ckpt_latest.pt: cannot resume from it .no 'optimizer' in the checkpoint."):
        train_pretrain.main(FAST + ["--max-steps", "3", "--out-dir", a, "--resume"])


def test_resuming_drops_a_torn_metrics_line_and_later_rows(tmp_path, capsys):
    from train_utils import MetricsLog, read_metrics
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    log = MetricsLog(str(tmp_path), resume_step=1)
    assert "metrics.jsonl: skipped 1 line(s) that are not JSON (line 3)" in capsys.readouterr().err
    log.log({"step": 2, "loss": 1.4})
    assert read_metrics(log.path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.4}]


def test_os_errors_end_in_a_line_naming_the_path(tmp_path):
    # the raw form was "[Errno 17] File exists: 'out/a_file'" for a file where --out-dir's folder goes
    (tmp_path / "f.txt").write_text("")
    blocked = NotADirectoryError(20, "Not a directory", str(tmp_path / "f.txt" / "plots"))
    assert common.os_message(FileExistsError(17, "File exists", str(tmp_path / "f.txt"))) == \
        f"{tmp_path / 'f.txt'}: a file is in the way of a folder"
    assert common.os_message(blocked) == f"{tmp_path / 'f.txt'}: a file is in the way of a folder"  # the file, not plots/
    assert common.os_message(FileExistsError(17, "File exists", str(tmp_path))) == f"{tmp_path}: file exists"  # a folder
    assert common.os_message(PermissionError(13, "Permission denied", "r/ckpt_latest.pt")) == "r/ckpt_latest.pt: permission denied"
    assert common.os_message(FileNotFoundError("r: no checkpoint")) == "r: no checkpoint"  # ours already name the path


def test_resolve_device_gives_cuda_an_index():
    # torch.cuda.set_device rejects a bare "cuda" (seen on a GPU machine: every stage failed with --device cuda)
    n = torch.cuda.device_count()
    assert common.resolve_device("cuda:1", local_rank=3) == "cuda:1"
    assert common.resolve_device("cpu") == "cpu"
    assert common.resolve_device("auto") == ("cuda:0" if n else "cpu")
    if n:
        assert common.resolve_device("cuda") == "cuda:0"
    # more torchrun ranks than GPUs (seen as "invalid device ordinal" deep in CUDA): a one-line error instead
    with pytest.raises(ValueError, match=f"needs GPU {n} but this machine has {n}" if n else "no CUDA GPU is visible"):
        common.resolve_device("cuda", local_rank=n)


FAULTS_PER_STEP = """
import resource, statistics, torch, common
from model import MiniGPT, MiniGPTConfig
assert common.keep_freed_memory()
torch.manual_seed(0)
model = MiniGPT(MiniGPTConfig(vocab_size=2048, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128))
opt = torch.optim.AdamW(model.parameters())
x = torch.randint(0, 2048, (16, 129))  # 16 MB of logits a step
faults = []
for step in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(x[:, :-1], x[:, 1:]).loss.backward(); opt.step(); opt.zero_grad()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults, statistics.median(faults[8:]))  # 12 steps: a few that still grow the heap do not move the median
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="mallopt thresholds are glibc's")
def test_keep_freed_memory_stops_the_page_faults_of_every_step():
    # each step frees and reallocates the same large tensors; with glibc's defaults the median step here page-faults
    # 6,000-10,000 times (the freed memory went back to the OS), with the helper ~0 (a step that grows the heap: more;
    # over 4 late steps of 10 such steps once made the median 257 in CI, so it is taken over 12 steps of 20)
    r = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split()[-1]) < 100, r.stdout


def test_keep_freed_memory_leaves_the_allocator_alone_for_cuda(monkeypatch):
    import ctypes
    monkeypatch.setattr(ctypes, "CDLL", lambda name: pytest.fail("mallopt called for a CUDA device"))
    assert common.keep_freed_memory("cuda:0") is False  # CUDA tensors live in torch's caching allocator


@pytest.mark.parametrize("native", [True, False])
def test_dtype_auto_uses_bf16_only_where_the_cpu_multiplies_it_natively(monkeypatch, capsys, native):
    monkeypatch.setattr(common, "cpu_has_fast_bf16", lambda: native)
    assert common.resolve_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert capsys.readouterr().err == ""
    # asking for bf16 on a CPU that emulates it (1.3 against 84 GFLOP/s in fp32 on an AVX2 EPYC) says so, in one line
    assert common.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    err = capsys.readouterr().err
    assert ("no AVX-512 BF16" in err and err.count("\n") == 1) if not native else err == ""


@pytest.mark.parametrize("logical,cores,omp,expected", [
    (2, 2, None, "2 CPU threads (one per core)"),
    (2, 1, None, "1 CPU thread (one per physical core: 2 logical CPUs share 1; --num-threads 2 uses them all)"),
    (2, 1, "2", "2 CPU threads (OMP_NUM_THREADS)"),
])
def test_cpu_threads_are_one_per_physical_core_unless_told(monkeypatch, logical, cores, omp, expected):
    """Two vCPUs that are hyper-threads of one core get one thread (torch's default counts logical CPUs)."""
    monkeypatch.setattr(common, "usable_cpus", lambda: (logical, cores))
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    threads = torch.get_num_threads()
    try:
        assert common.cpu_threads() == expected
        assert torch.get_num_threads() == int(expected.split()[0])
        assert common.cpu_threads(requested=3) == "3 CPU threads (--num-threads)"
    finally:
        torch.set_num_threads(threads)


def test_step_0_is_the_baseline_and_never_the_best_checkpoint():
    improved, baseline, patience = tu.track_best(0, 0.69, float("inf"), None, 0, 0.0)  # the starting model
    assert (improved, baseline, patience) == (False, 0.69, 0)
    improved, baseline, patience = tu.track_best(50, 0.75, float("inf"), baseline, patience, 0.0)
    assert improved and patience == 1  # the first trained eval is the best so far, but it did not beat the start
    assert tu.track_best(100, 0.80, 0.75, baseline, patience, 0.0) == (False, 0.69, 2)
    assert tu.best_summary(50, 0.75, baseline, "held-out DPO loss") == (
        "best checkpoint: step 50, held-out DPO loss 0.7500; it never improved on step 0's 0.6900 (the model training "
        "started from), so ckpt_best.pt is the best trained step, not better than the start")
    assert tu.track_best(150, 0.60, 0.75, baseline, 2, 0.0) == (True, 0.69, 0)
    assert tu.best_summary(150, 0.60, baseline) == "best checkpoint: step 150, val loss 0.6000 (step 0: 0.6900)"
    assert tu.best_summary(150, -5.2, -0.69, "held-out reward", sign=-1) == \
        "best checkpoint: step 150, held-out reward 5.2000 (step 0: 0.6900)"
    assert tu.best_summary(None, float("inf"), 0.69).startswith("no eval after step 0")


def test_a_plot_has_no_panel_for_a_metric_no_run_logged(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "train_loss": 2.0, "lr": 0.1}\n{"step": 1, "val_loss": 2.1}\n')
    drawn = tu.plot_metrics([str(run)], str(run / "plots" / "p.png"), keys=(("train_loss", "val_loss"), ("pass_rate",), ("lr",)))
    assert drawn == [("train_loss", "val_loss"), ("lr",)] and (run / "plots" / "p.png").is_file()
