"""bench/: each benchmark runs end to end on tiny settings and prints the ratio it exists for (the timings
themselves are never asserted: they are figures for BENCHMARKS.md, not tests)."""
import json
import os
import re
import subprocess
import sys

import pytest

import builtin_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(script, *args, tmp=None, timeout=240):
    env = {**os.environ, "TMPDIR": str(tmp)} if tmp else None  # bench_pretrain's work folder lands in tmp_path
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), *args], cwd=ROOT, capture_output=True,
                       text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "corpus.txt"
    path.write_text("\n\n".join(builtin_data.pretrain_texts()[:300]), encoding="utf-8")
    return str(path)


def test_bench_model_prints_training_and_generation_ratios_against_hf():
    pytest.importorskip("transformers", reason="optional: pip install -r requirements-extras.txt")
    out = bench("bench_model.py", "--configs", "tiny", "--batch", "2", "--seq-len", "32", "--steps", "1",
                "--rounds", "1", "--new-tokens", "4", "--dtypes", "fp32")
    train_row = re.search(r"^tiny\s+fp32\s+[\d,]+\s+[\d,]+\s+([\d.]+)\s+[\d,]+\s+([\d.]+)", out, re.M)
    assert train_row and float(train_row[1]) > 0 and float(train_row[2]) > 0, out
    generation_rows = re.findall(r"^tiny\s+(\d)\s+[\d,]+\s+[\d,]+\s+([\d.]+)\s+([\d.]+)", out, re.M)
    # batch 1 and 8; fp32 ratio > 0, and fp32's greedy tokens identical to HF's (agree 1.00): same weights, same argmax
    assert [b for b, _, _ in generation_rows] == ["1", "8"], out
    assert all(float(ratio) > 0 and agree == "1.00" for _, ratio, agree in generation_rows), out
    limit_rows = re.findall(r"^tiny\s+(fp32|bf16|int8)\s+([\d.]+)\s+[\d,]+\s+[\d,]+\s+(\d+)%", out, re.M)
    assert [v for v, _, _ in limit_rows] == ["fp32", "bf16", "int8"] and all(float(mb) > 0 for _, mb, _ in limit_rows), out
    assert float(limit_rows[1][1]) == pytest.approx(float(limit_rows[0][1]) / 2, rel=0.01)  # bf16: half fp32's bytes


def test_bench_tokenizer_trains_both_and_round_trips(corpus):
    pytest.importorskip("tokenizers", reason="optional: pip install -r requirements-extras.txt")
    out = bench("bench_tokenizer.py", "--corpus", corpus, "--vocab-size", "400")
    row = [f for f in out.strip().splitlines()[-1].split() if f != "|"]
    assert row[0] == "corpus.txt" and len(row) == 12, out  # name; ours, HF, ratio for train, encode, batch; bytes/token x 2
    assert float(row[-2]) > 1 and float(row[-1]) > 1, out  # a trained BPE merges: over one byte a token


def test_bench_pretrain_reports_exact_held_out_bits_per_byte(corpus, tmp_path):
    out = bench("bench_pretrain.py", "--corpus", corpus, "--budget", "5", "--out-dir", str(tmp_path / "run"), "--",
                "--config", "tiny", "--vocab-size", "300", "--seq-len", "64", "--batch-size", "4", "--max-steps", "5",
                "--eval-interval", "5", "--eval-iters", "1", tmp=tmp_path)
    bpb = float(re.search(r"held-out bits per byte: ([\d.]+)", out)[1])
    assert 0 < bpb < 8.5, out  # a barely trained model: near the uniform model's bits/byte, never nonsense
    assert re.search(r"ratio to nanoGPT's best: [\d.]+", out), out


@pytest.mark.parametrize("script,args,message", [
    ("bench_model.py", ["--configs", "huge"], "error: unknown config 'huge'; choose one of tiny"),  # before any timing
    ("bench_pretrain.py", ["--corpus", "missing.txt"], "error: missing.txt: corpus not found"),
    ("bench_tokenizer.py", ["--corpus", "missing.txt"], "error: missing.txt: corpus not found"),
])
def test_bench_bad_flags_are_a_one_line_error(script, args, message):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith(message), r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_bench_serve_compares_batched_with_sequential_and_passes_its_load_test():
    out = bench("bench_serve.py", "--requests", "4", "--clients", "1", "3", "--max-tokens", "4", "--load-requests", "30",
                "--load-clients", "4")
    rows = re.findall(r"^\s+(\d+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)", out, re.M)
    assert [r[0] for r in rows] == ["1", "3"] and all(float(r[3]) > 0 for r in rows), out
    assert "in both modes: yes" in out, out  # seeded sampling gives the same tokens batched or not
    assert re.search(r"load test: 30 requests from 4 clients in [\d.]+ s: 30 answered, 27 2xx, 3 4xx "
                     r"\(malformed sent: 3\), 0 5xx; .* still serving: True", out), out


def test_bench_distill_trains_teacher_and_both_students_and_prints_exact_bits_per_byte(tmp_path):
    out = bench("bench_distill.py", "--datasets", "builtin", "--seeds", "3", "--steps", "2", "--out", str(tmp_path),
                "--builtin-tokenizer", str(tmp_path / "none.json"), "--",
                "--seq-len", "32", "--batch-size", "2", "--eval-iters", "1", "--dtype", "float32", timeout=400)
    for run in ("teacher_builtin", "builtin_plain_3", "builtin_distill_3"):
        assert os.path.exists(tmp_path / run / "ckpt_best.pt"), out
    row = re.search(r"^builtin\s+3\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out, re.M)
    assert row, out
    teacher, plain, distilled, ratio = map(float, row.groups())
    assert all(0 < b < 12 for b in (teacher, plain, distilled)), out  # 2 steps: near uniform over the vocab, not nonsense
    assert ratio == pytest.approx(distilled / plain, abs=2e-3), out
    held_out = round(len(builtin_data.pretrain_texts()) * 0.05)  # 5% of the built-in documents, blank-line separated
    assert (tmp_path / "builtin_val.txt").read_text().count("\n\n") == held_out - 1


def test_lmeval_parity_prints_equal_scores_for_every_task(tmp_path_factory):
    pytest.importorskip("lm_eval", reason="optional: pip install -r requirements-extras.txt")
    from test_eval_benchmarks import make_bench  # a tiny random run and a task file of every format
    run_and_data = make_bench(tmp_path_factory)
    out = bench("lmeval_parity.py", "--checkpoint", run_and_data["run"], "--data-dir", run_and_data["data"], timeout=400)
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert set(rows) == {"hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "boolq", "lambada",
                         "wikitext2"}, out
    for task, row in rows.items():
        assert float(row[3]) < 2e-3, out  # the largest log-likelihood difference on any item
        if task not in ("lambada", "wikitext2"):
            assert row[4] == row[5], out  # the same accuracy


def test_stage_fingerprint_is_identical_run_to_run_and_names_a_changed_number(tmp_path):
    """The before/after check of a refactor: every stage's logged numbers, fp32, seed fixed. Two runs of the same tree
    are identical; a record with one number changed is reported by stage, step and key, with exit 1."""
    import json
    record = str(tmp_path / "fingerprint.json")
    out = bench("stage_fingerprint.py", "--record", record, tmp=tmp_path)
    assert "recorded" in out and "of 8 stages" in out
    assert "identical: " in bench("stage_fingerprint.py", "--check", record, tmp=tmp_path)
    with open(record) as f:
        data = json.load(f)
    row = next(r for r in data["stages"]["dpo"] if "loss" in r)
    row["loss"] += 1e-7
    changed = str(tmp_path / "changed.json")
    with open(changed, "w") as f:
        json.dump(data, f)
    # the comparison --check makes after its run, on two records (a third run of every stage took ~10 s)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "stage_fingerprint.py"), "--compare", changed, record],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 1 and "dpo row" in r.stdout and f"(step {row['step']}) loss:" in r.stdout, r.stdout


def test_pass_at_k_is_the_unbiased_estimator_of_chen_et_al():
    """pass@k = 1 - C(n-c, k) / C(n, k): at least one right answer among k drawn without replacement from n."""
    import importlib.util
    import math
    spec = importlib.util.spec_from_file_location("pass_at_k", os.path.join(ROOT, "bench", "pass_at_k.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.pass_at_k(4, 1, 2) == pytest.approx(0.5)
    for n in (1, 4, 32):
        for c in range(n + 1):
            assert module.pass_at_k(n, c, 1) == pytest.approx(c / n)  # k = 1: the share right
            for k in range(1, n + 1):
                closed = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert module.pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)
    with pytest.raises(ValueError, match="at least k samples"):
        module.pass_at_k(4, 1, 8)


def test_the_2to3_chain_trains_sft_on_two_digit_traces_and_grpo_on_three_digit_prompts(tmp_path):
    """make reasoning-2to3: SFT's data holds traces of 1-2 digit numbers only; GRPO asks 3-digit sums, checked."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("reasoning_chains", os.path.join(ROOT, "bench", "reasoning_chains.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (_, _, pre), (_, _, sft), (_, _, grpo) = module.commands(str(tmp_path), 1, "2to3")
    assert sft[sft.index("--data") + 1] == "arithmetic-think-1-2" and grpo[grpo.index("--data") + 1] == "arithmetic-think"
    assert "--tools" not in grpo and "--tokenizer-digits" in pre
    think_sft = module.commands(str(tmp_path), 1, "think")[1][2]
    assert think_sft[think_sft.index("--data") + 1] == "arithmetic-think"  # the think chain's SFT is unchanged
    (_, _, pre), (_, _, sft), (_, _, grpo) = module.commands(str(tmp_path), 1, "reworded")  # make reasoning-reworded
    assert sft[sft.index("--data") + 1] == "arithmetic-think-phrased"
    assert grpo[grpo.index("--data") + 1] == "arithmetic-think-reworded" and "--tools" not in grpo


def test_reward_hacking_runs_both_ppo_runs_and_plots_proxy_and_gold_against_kl(stage_dirs, tmp_path):
    """make reward-hacking: a weak reward model, PPO against it without KL penalty, the default run beside it; the
    figure and a results file with KL, proxy and gold at each eval of both runs."""
    import json
    import shutil
    runs = tmp_path / "runs"
    for stage in ("sft", "reward"):
        shutil.copytree(stage_dirs[stage], runs / f"{stage}_tiny")
    # flags every stage takes, last on each command line: two steps of everything, small batches, fp32
    tiny = ["--max-steps", "2", "--eval-interval", "2", "--batch-size", "4", "--seq-len", "64", "--eval-iters", "2",
            "--dtype", "float32", "--warmup-steps", "0"]
    # a flag PPO does not know: PPO's own one-line error, then the bench's, no traceback (the weak model is kept)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "reward_hacking.py"), "--runs", str(runs), "--out",
                        str(tmp_path), "--ppo-args=--no-such-flag", "--stage-args", *tiny], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "unrecognized arguments: --no-such-flag" in r.stderr
    failed = f"error: {runs / 'ppo_hacking_tiny'}: train_ppo.py failed (exit 2), see its message above"
    assert r.stderr.strip().splitlines()[-1] == failed
    ppo = "--ppo-args=--rollout-batch 4 --minibatch-size 2 --ppo-epochs 1 --max-new-tokens 6 --eval-batch 4"
    out = bench("reward_hacking.py", "--runs", str(runs), "--out", str(tmp_path), ppo, "--stage-args", *tiny, tmp=tmp_path,
                timeout=600)
    assert "gold accuracy" in out and os.path.isfile(tmp_path / "reward_hacking.png")
    results = json.load(open(tmp_path / "reward_hacking_results.json"))
    curves = list(results["curves"].values())
    assert len(curves) == 2 and all([p["step"] for p in c] == [0, 2] for c in curves)
    assert all({"kl", "proxy", "gold"} <= set(p) for c in curves for p in c)
    weak = json.load(open(runs / "ppo_hacking_tiny" / "config.json"))["args"]
    assert weak["kl_coef"] == 0 and not weak["adaptive_kl"] and weak["reward_model"].endswith("reward_weak_tiny")
    assert weak["rollout_batch"] == 4 and weak["max_new_tokens"] == 6  # --ppo-args reach the PPO runs
    assert not json.load(open(runs / "reward_weak_tiny" / "config.json"))["args"]["likelihood"]


def test_bench_decode_prints_every_ratio_with_compiled_tokens_equal_to_eager():
    out = bench("bench_decode.py", "--parts", "batch1", "rl", "--config", "tiny", "--rounds", "1", "--new-tokens", "6",
                "--rl-new-tokens", "6", timeout=400)  # part 2 (batched) is part 1's code at other batch sizes
    batch1 = re.findall(r"^(fp32|bf16|int8)\s+[\d.]+\s+\d+\s+\d+\s+\d+%\s+\d+\s+\d+%\s+([\d.]+)\s+([\d.]+)\s+[\d.]+(.*)$", out, re.M)
    assert [r[0] for r in batch1] == ["fp32", "bf16", "int8"] and all(float(r[1]) > 0 for r in batch1), out
    assert all(r[3] == "" for r in batch1), out  # neither "(compiled tokens differ ...)" nor "(did not compile ...)"
    assert "greedy rows identical, compiled vs eager: True" in out and "compiled + sample_from" in out, out
    assert re.search(r"^compiled, draw in the step\s+[\d.]+\s+[\d.]+\s+[\d.]+", out, re.M), out


def test_phrasings_bench_asks_held_out_pairs_three_ways(stage_dirs, tmp_path):
    """One row per run, then mean +- std over the runs (--chain's seeds), all of it in --json."""
    out = bench("phrasings.py", "--runs", stage_dirs["sft"], stage_dirs["sft"], "--n", "4", "--max-new-tokens", "8",
                "--json", str(tmp_path / "r.json"))
    row = re.search(r"sft\S*\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert row and all(0 <= float(v) <= 1 for v in row.groups()), out
    assert re.search(r"^mean \+- std.*0\.000 \[", out, re.M), out  # the same run twice: no spread
    saved = json.load(open(tmp_path / "r.json"))
    assert list(saved["runs"][stage_dirs["sft"]]) == ["first wording", "other training wordings", "held-out wordings"]


def test_tool_use_bench_prints_both_sets_for_every_case(tmp_path):
    """bench/tool_use.py end to end on a random model with room for the tool lists (the figures are BENCHMARKS.md's);
    a run whose context cannot hold them gets a one-line error."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import torch
    from bench_serve import random_run_dir
    from common import save_checkpoint, write_json
    from model import MiniGPT, get_config
    run = random_run_dir("tiny", str(tmp_path))
    cfg = get_config("tiny", vocab_size=2048, max_seq_len=512)
    write_json(os.path.join(run, "config.json"), {"stage": "sft", "model": cfg.to_dict()})
    torch.manual_seed(0)
    save_checkpoint(os.path.join(run, "ckpt_best.pt"), {"model": MiniGPT(cfg).state_dict(), "model_config": cfg.to_dict()})
    out = bench("tool_use.py", "--runs", run, "--n", "2", "--json", str(tmp_path / "r.json"))
    rows = re.findall(r"^(calculator|other tool|no tool|not offered)(: right tool)?\s+([\d.]+) .*?\s+([\d.]+) \[", out, re.M)
    assert len(rows) == 6 and all(0 <= float(a) <= 1 and 0 <= float(b) <= 1 for *_, a, b in rows), out
    (tmp_path / "short").mkdir()
    short = random_run_dir("tiny", str(tmp_path / "short"))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "tool_use.py"), "--runs", short, "--n", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "max_seq_len 256 is too short for the tool lists" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
