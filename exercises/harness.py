"""What every exercise test needs: load the implementation under test, compare it with the project's own code
(values and gradients) with a message a student can act on, and run a real stage script with it plugged in."""
import importlib.util
import json
import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.join(os.path.dirname(HERE), "tests"))
from tiny_runs import FAST, make_chain  # noqa: E402,F401  (the tests' tiny runs: the same flags and chain)

FOLDERS = {"mine": "my_work", "solution": "solutions", "stub": "stubs"}
IMPL = "mine"  # set from --impl by conftest.py
RUNS = os.path.join(HERE, "runs")  # where a student's runs are kept, with their plots (git ignores it)
_current = {"name": None}  # the exercise being tested: its runs go to runs/<name>/


class NotStarted(Exception):
    """The student has no file for this exercise yet."""


_loaded = {}


def load(name):
    """The module exercises/<my_work|solutions|stubs>/<name>.py, as --impl says."""
    _current["name"] = name
    path = os.path.join(HERE, FOLDERS[IMPL], f"{name}.py")
    if not os.path.exists(path):
        raise NotStarted(f"no exercises/{FOLDERS[IMPL]}/{name}.py yet: start the exercise with "
                         f"`python exercises/start.py {name}` (it copies the stub there for you to fill in)")
    if path not in _loaded:
        spec = importlib.util.spec_from_file_location(f"exercise_{IMPL}_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[path] = module
    return _loaded[path]


def expect_close(actual, expected, what, atol=1e-5, rtol=1e-4):
    """Fail with one line saying what differs, where, and by how much (a tensor, number or nested list each)."""
    actual_t, expected_t = _float64(actual), _float64(expected)
    if actual_t.shape != expected_t.shape:
        pytest.fail(f"{what}: shape {tuple(actual_t.shape)}, expected {tuple(expected_t.shape)}", pytrace=False)
    bad = ~torch.isclose(actual_t, expected_t, atol=atol, rtol=rtol, equal_nan=False)
    if bad.any():
        where = tuple(int(i) for i in bad.nonzero()[0])
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.numel()} values differ; first at index {where}: "
                    f"yours {actual_t[where].item():.6g}, expected {expected_t[where].item():.6g}", pytrace=False)


def _float64(value):
    return value.detach().double() if torch.is_tensor(value) else torch.as_tensor(value, dtype=torch.float64)


def expect_equal(actual, expected, what):
    if actual != expected:
        pytest.fail(f"{what}: got {_short(actual)}, expected {_short(expected)}", pytrace=False)


def _short(value, n=160):
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


def gradients(fn, *inputs):
    """fn(*inputs) and the gradient of a fixed random weighting of its output w.r.t. every input that needs one."""
    out = fn(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    grads = torch.autograd.grad((out * weights).sum(), [x for x in inputs if torch.is_tensor(x) and x.requires_grad])
    return out, grads


def leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def run_stage(script, argv, show=("train_loss",)):
    """Run a stage script's main() in this process (so the function patched in is the one it calls) and return its
    logged rows; prints the curves of `show` so `pytest -s` lets the student watch their code train.
    Testing your own code (--impl mine), the run is kept with its plots in exercises/runs/<exercise>/<folder>/."""
    argv = list(argv)
    if IMPL == "mine":
        i = argv.index("--out-dir") + 1
        argv[i] = os.path.join(RUNS, _current["name"], os.path.basename(argv[i].rstrip("/")))
        argv = [a for a in argv if a != "--no-plot"] + ["--overwrite"]
    script.main(argv)
    out_dir = argv[argv.index("--out-dir") + 1]
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"), encoding="utf-8")]
    for key in show:
        values = [(r["step"], r[key]) for r in rows if key in r]
        print(f"{script.__name__} {key}: " + ", ".join(f"{step}: {v:.4g}" for step, v in values))
    return rows


def pretrain_learns(out_dir, steps=20):
    """Pretrain the tiny model for `steps` steps with whatever is patched in; fails unless the val loss fell."""
    import train_pretrain
    rows = run_stage(train_pretrain, FAST + ["--max-steps", str(steps), "--eval-interval", str(steps), "--vocab-size",
                                             "512", "--out-dir", str(out_dir)], show=("train_loss", "val_loss"))
    val = curve(rows, "val_loss")
    if not val[-1] < val[0] - 0.5:
        pytest.fail(f"with your code in the model the val loss went {val[0]:.3f} -> {val[-1]:.3f} in {steps} steps; "
                    f"with the project's it falls by more than 1", pytrace=False)
    return rows


def same_run_as_the_projects(monkeypatch, out_root, script, argv, patches, keys=("train_loss",), rtol=1e-3):
    """Run a stage script twice with the same flags and seed: with the project's code, then with `patches`
    [(object, attribute, your function), ...] in place. A right answer logs the same numbers (to rounding)."""
    theirs = run_stage(script, argv + ["--out-dir", str(out_root / "project")], show=keys)
    for obj, name, value in patches:
        monkeypatch.setattr(obj, name, value)
    print("-- the same run with your code:")
    mine = run_stage(script, argv + ["--out-dir", str(out_root / "yours")], show=keys)
    for key in keys:
        assert curve(theirs, key), f"{script.__name__} logged no {key!r}: the test asks for the wrong key"
        expect_close(curve(mine, key), curve(theirs, key), f"{script.__name__}'s logged {key} at each step with your "
                     f"code (vs the project's)", atol=1e-4, rtol=rtol)
    return mine


def curve(rows, key):
    return [r[key] for r in rows if key in r]
