"""Apple GPUs (mps) as a first-class device, and the resource guard that keeps a laptop usable. No Mac is here, so the
MPS tests fake the backend's availability and check the selection, precision and error paths, not the kernels."""
import json
import os
import subprocess
import sys

import pytest
import torch

import common
import eval_benchmarks
import generate
import serve
import train_pretrain
import train_utils as tu
from conftest import FAST

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fake_mac(monkeypatch):
    """No CUDA, an Apple GPU that answers; returns a setter for whether it multiplies bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(common, "mps_available", lambda: True)
    bf16 = {"supported": True}
    monkeypatch.setattr(common, "mps_supports_bf16", lambda: bf16["supported"])
    return bf16


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(common, "mps_available", lambda: True)
    assert common.resolve_device("auto") == "mps"
    monkeypatch.setattr(common, "mps_available", lambda: False)
    assert common.resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(common, "mps_available", lambda: True)
    assert common.resolve_device("auto") == "cuda:0"


def test_generate_serve_and_eval_choose_their_device_with_the_same_rule():
    assert generate.resolve_device is serve.resolve_device is eval_benchmarks.resolve_device is common.resolve_device


def test_mps_asked_for_where_there_is_none_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(common, "mps_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device mps: no Apple GPU is available .*; pass --device cpu$"):
        common.resolve_device("mps")


def test_mps_trains_in_bf16_where_it_has_it_else_float32_said_once(fake_mac, capsys):
    assert common.resolve_dtype("auto", "mps") == torch.bfloat16
    assert capsys.readouterr().err == ""
    fake_mac["supported"] = False
    assert common.resolve_dtype("auto", "mps") == torch.float32
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no bf16 on the Apple GPU" in err and "float32" in err


def test_mps_refuses_float16_and_unsupported_bf16_in_one_line(fake_mac):
    with pytest.raises(SystemExit, match="--dtype float16 is for CUDA; on mps use bfloat16 or float32"):
        common.resolve_dtype("float16", "mps")
    fake_mac["supported"] = False
    with pytest.raises(SystemExit, match="no bf16 on the Apple GPU; use --dtype float32"):
        common.resolve_dtype("bfloat16", "mps")


def test_ddp_on_mps_is_a_one_line_error_before_any_process_group(fake_mac, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(tu.dist, "init_process_group", lambda *a, **k: pytest.fail("a process group was started"))
    args = train_pretrain.parse_args(FAST + ["--device", "mps", "--out-dir", str(tmp_path / "run")])
    with pytest.raises(ValueError, match="DDP does not run on Apple GPUs"):
        tu.setup(args)


def test_memory_figures_on_mps_come_from_torch_mps(monkeypatch):
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 300 * 2**20)
    run = tu.Run()
    run.device_type = "mps"
    assert tu.peak_memory_mb(run) == 300


def test_max_cpu_caps_the_threads(monkeypatch):
    monkeypatch.setattr(common, "usable_cpus", lambda: (4, 4))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    try:
        assert common.cpu_threads(max_cpu=50) == "2 CPU threads (--max-cpu 50% of 4 cores)"
        assert common.cpu_threads(max_cpu=10) == "1 CPU thread (--max-cpu 10% of 4 cores)"  # never below one
    finally:
        torch.set_num_threads(threads)


def test_system_memory_in_use_is_read_as_a_percent():
    used = tu.system_memory_percent()
    assert used is not None and 0 < used < 100


def test_a_run_over_max_memory_saves_stops_and_resumes(tmp_path, monkeypatch, capsys):
    """A limit the run must pass (1% of the machine): it saves after the first step and says how to go on; the run is
    not finished (no done.json, so `make` resumes it), and --resume without the limit finishes it."""
    monkeypatch.setenv("MINIGPT_DATA_DIR", str(tmp_path / "cache"))
    out = str(tmp_path / "run")
    args = FAST + ["--max-steps", "6", "--eval-interval", "100", "--vocab-size", "300", "--out-dir", out]
    train_pretrain.main(args + ["--max-memory", "1"])
    printed = capsys.readouterr().out
    assert "memory: the system uses" in printed and "over --max-memory 1" in printed and "resume with:" in printed
    assert torch.load(os.path.join(out, "ckpt_latest.pt"), weights_only=True)["step"] == 1
    assert not os.path.exists(os.path.join(out, tu.DONE_FILE))
    train_pretrain.main(args + ["--resume"])
    with open(os.path.join(out, tu.DONE_FILE)) as f:
        assert json.load(f)["step"] == 6


@pytest.mark.parametrize("flag,value,message", [("--max-memory", "101", "--max-memory must be at most 100"),
                                                ("--max-cpu", "0", "--max-cpu must be above 0")])
def test_resource_limits_out_of_range_are_refused(flag, value, message):
    with pytest.raises(ValueError, match=message):
        train_pretrain.parse_args([flag, value])


def make(target, out, *extra):
    fast = "--max-steps 2 --eval-interval 2 --batch-size 4 --seq-len 32 --eval-iters 1 --warmup-steps 1 --vocab-size 300 " \
           "--dtype float32 --no-plot"
    return subprocess.run(["make", "--no-print-directory", target, f"OUT={out}", f"PY={sys.executable}", f"ARGS={fast}",
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MINIGPT_DATA_DIR": os.path.join(out, "cache")})


@pytest.mark.skipif(subprocess.run(["which", "make"], capture_output=True).returncode != 0, reason="needs make")
def test_make_reuses_a_finished_run_resumes_an_interrupted_one_and_clean_removes_them(tmp_path):
    out = str(tmp_path / "runs")
    first = make("pretrain", out)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "train_pretrain.py" in first.stdout and "--resume" not in first.stdout
    again = make("pretrain", out)  # finished: nothing to train (before, the script refused the used folder)
    assert again.returncode == 0 and "train_pretrain.py" not in again.stdout, again.stdout + again.stderr
    os.remove(os.path.join(out, "pretrain_tiny", tu.DONE_FILE))  # as after Ctrl+C: a checkpoint, not finished
    resumed = make("pretrain", out)
    assert resumed.returncode == 0 and "--resume" in resumed.stdout, resumed.stdout + resumed.stderr[-3000:]
    assert os.path.isfile(os.path.join(out, "pretrain_tiny", tu.DONE_FILE))
    cleaned = make("clean", out)
    assert cleaned.returncode == 0 and not os.path.exists(os.path.join(out, "pretrain_tiny"))
