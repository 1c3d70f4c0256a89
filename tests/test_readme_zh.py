"""README_zh.md stays true: the same commands as README.md (quoted arguments may differ: Chinese prompts), every flag
they use exists, every make target they name exists, and it covers each stage, serving, evaluation and export."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commands(name):
    """Each command line of the file's ```bash blocks: continuations joined, comments dropped, quoted text as "…"."""
    text = open(os.path.join(ROOT, name), encoding="utf-8").read()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                line = re.sub(r"'[^']*'", "'…'", re.sub(r'"[^"]*"', '"…"', line))
                found.append(re.sub(r"\s+", " ", line))
    return found


def test_both_readmes_give_the_same_commands():
    en, zh = set(commands("README.md")), set(commands("README_zh.md"))
    assert len(en) > 40
    assert not en - zh, f"in README.md but not README_zh.md: {sorted(en - zh)}"
    assert not zh - en, f"in README_zh.md but not README.md: {sorted(zh - en)}"


def test_the_readmes_link_to_each_other():
    en = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().splitlines()
    zh = open(os.path.join(ROOT, "README_zh.md"), encoding="utf-8").read().splitlines()
    assert any("(README_zh.md)" in line for line in en[:5]) and any("(README.md)" in line for line in zh[:5])


def test_readme_zh_covers_every_stage_serving_evaluation_export_and_why_each_stage_exists():
    zh = open(os.path.join(ROOT, "README_zh.md"), encoding="utf-8").read()
    for name in ("train_pretrain.py", "train_sft.py", "train_reward.py", "train_dpo.py", "train_ppo.py", "train_grpo.py",
                 "train_distill.py", "generate.py", "serve.py", "eval_benchmarks.py", "export_hf.py", "exercises/README.md",
                 "## 运行目录", "## 在一台新机器上的两条命令"):
        assert name in zh, name
    for why in ("为什么先做 SFT，再做 RLHF", "为什么需要奖励模型", "为什么 PPO 要截断", "为什么 DPO 不需要奖励模型",
                "为什么 GRPO 不需要评论家"):
        assert why in zh, why
    assert "监督微调 (SFT)" in zh  # terms in both languages where a student meets the English one in papers


def script_and_flags(command):
    """('train_dpo.py', ['--init-from', ...], ['train']) for `python train_dpo.py ...`; None for other commands."""
    words = command.replace("pip install -r requirements.txt && ", "").split()
    if words[0] == "torchrun":
        words = ["python"] + words[[w.endswith(".py") for w in words].index(True):]
    if words[0] != "python" or not words[1].endswith(".py"):
        return None
    sub = [w for w in words[2:3] if not w.startswith("-") and w in ("train", "stats")]
    return words[1], sorted({w.split("=")[0] for w in words[2:] if w.startswith("--")}), sub


SCRIPTS = sorted({(s[0], tuple(s[2])) for s in filter(None, map(script_and_flags, commands("README.md")))})


@pytest.fixture(scope="module")
def helps():
    """Every script's `--help`, all started at once (one after another they took ~40 s of the suite, mostly imports)."""
    runs = {(script, sub): subprocess.Popen([sys.executable, script, *sub, "--help"], cwd=ROOT, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for script, sub in SCRIPTS}
    return {key: (run, *run.communicate(timeout=300)) for key, run in runs.items()}


@pytest.mark.parametrize("script,sub", SCRIPTS, ids=[" ".join((s,) + sub) for s, sub in SCRIPTS])
def test_every_flag_the_readmes_use_is_in_the_scripts_help(script, sub, helps):
    used = sorted({f for c in commands("README.md") if (s := script_and_flags(c)) and (s[0], tuple(s[2])) == (script, sub)
                   for f in s[1]})
    run, stdout, stderr = helps[script, sub]
    assert run.returncode == 0, stderr[-2000:]
    missing = [f for f in used if not re.search(re.escape(f) + r"\b", stdout)]
    assert not missing, f"{script} {' '.join(sub)}: the READMEs use {missing}, which --help does not list"


def test_every_make_target_the_readmes_use_exists():
    makefile = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    targets = {c.split()[1] for c in commands("README.md") if c.startswith("make ")}
    assert targets and all(re.search(rf"^{t}:", makefile, flags=re.M) for t in targets), targets
