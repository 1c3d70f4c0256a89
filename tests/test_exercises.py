"""The exercises cannot rot and cannot pass on a stub: their tests pass on the reference solutions, fail on every
untouched stub with one readable line each, and `-k <name>` picks exactly one exercise."""
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXERCISES = os.path.join(ROOT, "exercises")
sys.path.insert(0, EXERCISES)
import start  # noqa: E402  (exercises/start.py: the list of exercises in teaching order)


def clean_env(**extra):
    """The caller's environment without what changes pytest's output (PYTEST_ADDOPTS=-rs hid the FAILED summary these
    tests read) or which implementation runs (--impl alone decides)."""
    dropped = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "MINILLM_EXERCISE_IMPL")
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, **extra}


def exercises_command(*args):
    return [sys.executable, "-m", "pytest", "exercises", "-q", "-p", "no:cacheprovider", *args]


def run_exercises(*args):
    return subprocess.run(exercises_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=900, env=clean_env())


def counts(output):
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", output)}


@pytest.fixture(scope="module")
def solution_run():
    return run_exercises("--impl", "solution")


def test_every_exercise_has_a_stub_a_solution_tests_and_a_statement_in_english_and_chinese():
    assert len(start.ORDER) >= 10
    for i, name in enumerate(start.ORDER, 1):
        stub = open(os.path.join(EXERCISES, "stubs", f"{name}.py"), encoding="utf-8").read()
        assert os.path.exists(os.path.join(EXERCISES, "solutions", f"{name}.py")), name
        assert os.path.exists(os.path.join(EXERCISES, f"test_{i:02d}_{name}.py")), name
        assert "English." in stub and "中文。" in stub, f"stubs/{name}.py: the statement needs both languages"
        assert f"pytest exercises -k {name}" in stub, f"stubs/{name}.py: the statement should say how to check it"
        assert "raise NotImplementedError" in stub, name


def test_the_reference_solutions_pass_every_exercise_test(solution_run):
    n = counts(solution_run.stdout)
    assert solution_run.returncode == 0 and n.get("passed", 0) >= 3 * len(start.ORDER), solution_run.stdout[-3000:]
    assert "failed" not in n and "skipped" not in n, solution_run.stdout[-3000:]


def test_every_stub_fails_every_test_with_one_readable_line(solution_run):
    r = run_exercises("--impl", "stub")
    n = counts(r.stdout)
    assert r.returncode == 1 and n.get("failed") == counts(solution_run.stdout)["passed"] and "passed" not in n, r.stdout[-3000:]
    assert "Traceback" not in r.stdout and "NotImplementedError" not in r.stdout, r.stdout[-3000:]
    failures = r.stdout.split("= FAILURES =")[1].split("short test summary")[0]
    blocks = re.split(r"\n_+ test_\w+ _+\n", failures)[1:]
    assert len(blocks) == n["failed"]
    for block in blocks:
        lines = [line for line in block.strip().splitlines() if line.strip() and not line.startswith("=")]
        assert len(lines) == 1 and re.search(r": exercise \w+: write (the loop of )?\w+\(\)", lines[0]), block


def test_dash_k_name_selects_exactly_that_exercises_tests():
    # one collecting pytest per exercise, all at once (one after another they took ~35 s of the suite)
    runs = [subprocess.Popen(exercises_command("--collect-only", "-k", name), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=clean_env()) for name in start.ORDER]
    for i, (name, run) in enumerate(zip(start.ORDER, runs), 1):
        ids = [line for line in run.communicate(timeout=900)[0].splitlines() if "::" in line]
        assert ids and all(line.startswith(f"exercises/test_{i:02d}_{name}.py::") for line in ids), (name, ids)


def test_an_exercise_not_started_says_how_to_start_it(tmp_path):
    shutil.copytree(EXERCISES, tmp_path / "exercises", ignore=shutil.ignore_patterns("my_work", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pytest", "exercises", "-q", "-p", "no:cacheprovider", "-k", "grpo"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=clean_env(PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])))
    assert r.returncode == 1 and "Traceback" not in r.stdout, r.stdout[-2000:]
    assert "no exercises/my_work/grpo.py yet: start the exercise with `python exercises/start.py grpo`" in r.stdout


def test_start_copies_the_stub_into_the_students_own_file_and_never_overwrites_it(tmp_path):
    shutil.copytree(EXERCISES, tmp_path / "exercises", ignore=shutil.ignore_patterns("my_work", "__pycache__"))
    script = str(tmp_path / "exercises" / "start.py")
    r = subprocess.run([sys.executable, script, "dpo_loss"], capture_output=True, text=True)
    mine = tmp_path / "exercises" / "my_work" / "dpo_loss.py"
    assert r.returncode == 0 and mine.read_text() == open(os.path.join(EXERCISES, "stubs", "dpo_loss.py")).read()
    mine.write_text("# my work\n")
    r = subprocess.run([sys.executable, script, "dpo_loss"], capture_output=True, text=True)
    assert r.returncode == 1 and "not overwritten" in r.stderr and mine.read_text() == "# my work\n"
    listing = subprocess.run([sys.executable, script], capture_output=True, text=True).stdout
    assert "dpo_loss     started" in listing and "rmsnorm      not started" in listing
    assert "exercises/my_work/" in open(os.path.join(ROOT, ".gitignore")).read().split()


def test_the_teachers_page_lists_every_exercise_in_order_with_its_time():
    page = open(os.path.join(EXERCISES, "README.md"), encoding="utf-8").read()
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|.*\| (\d+) min \|", page, flags=re.M)
    assert [(int(i), name) for i, name, _ in rows] == list(enumerate(start.ORDER, 1)), rows
