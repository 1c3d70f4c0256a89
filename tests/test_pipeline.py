"""The whole chain through the Makefile with very few steps: every stage's outputs load and the report prints."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import pipeline_report
from generate import load_generator
from model import load_value_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_pipeline_runs_every_stage_for_each_seed_and_prints_the_report(tmp_path):
    out = str(tmp_path / "runs")
    fast = ("--max-steps 3 --eval-interval 3 --batch-size 4 --seq-len 64 --eval-iters 1 --warmup-steps 1 "
            "--dtype float32 --no-plot")
    env = {**os.environ, "MINIGPT_DATA_DIR": str(tmp_path / "cache")}
    r = subprocess.run(["make", "pipeline", "SEEDS=1 2", f"OUT={out}", f"PY={sys.executable}", f"ARGS={fast}",
                        "PPO_ARGS=--rollout-batch 4 --minibatch-size 2 --ppo-epochs 1 --max-new-tokens 6 --eval-batch 4",
                        "GRPO_ARGS=--prompts-per-step 2 --num-generations 2 --max-new-tokens 6 --eval-batch 4"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    for seed in ("1", "2"):
        for stage in ("pretrain", "sft", "dpo", "ppo", "grpo"):
            assert isinstance(load_generator(os.path.join(out, f"seed_{seed}", f"{stage}_tiny")).generate("Hi"), str)
        load_value_model(os.path.join(out, f"seed_{seed}", "reward_tiny"))
        with open(os.path.join(out, f"seed_{seed}", "sft_tiny", "config.json")) as f:
            assert json.load(f)["args"]["seed"] == int(seed)
    report = r.stdout[r.stdout.index("2 seeds (1, 2)"):]
    for line in ("pretrain  val loss", "sft       held-out answer accuracy", "reward    held-out pairwise accuracy",
                 "dpo       held-out preference accuracy", "ppo       held-out reward",
                 "grpo      held-out answer accuracy"):
        assert line in report


def test_the_report_gives_mean_and_spread_over_seed_chains(tmp_path, capsys):
    """make pipeline SEEDS="1 2 3" writes OUT/seed_<s>/<stage>_tiny; the report gives each figure's mean +- sd."""
    for seed, (step_150, step_300) in {"1": (0.30, 0.40), "2": (0.35, 0.30), "3": (0.20, 0.50)}.items():
        run = tmp_path / f"seed_{seed}" / "sft_tiny"
        run.mkdir(parents=True)
        rows = [{"step": 0, "val_loss": 5.0, "pass_rate": 0.1}, {"step": 150, "val_loss": 0.5, "pass_rate": step_150},
                {"step": 300, "val_loss": 0.6, "pass_rate": step_300}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pipeline_report.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "3 seeds (1, 2, 3)" in out
    # SFT's best checkpoint is its best held-out accuracy (0.40, 0.35, 0.50), not its lowest val loss
    line = next(line for line in out.splitlines() if "held-out answer accuracy" in line)
    assert "0.417 +- 0.076 [0.350, 0.500]" in line and line.endswith("300, 150, 300")
