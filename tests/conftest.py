import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # flat modules at the repo root
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import subprocess  # noqa: E402

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tiny_runs import FAST, make_chain, memorized_run  # noqa: E402,F401  (the tests import FAST from here)


@pytest.fixture(scope="session")
def stage_dirs(tmp_path_factory):
    """A short pretrain -> SFT -> reward chain on the built-in data, shared by the later stages' tests."""
    root = tmp_path_factory.mktemp("chain")
    os.environ["MINIGPT_DATA_DIR"] = str(root / "cache")
    return make_chain(root)


@pytest.fixture(scope="session")
def memorized(tmp_path_factory):
    """A run directory whose model says tiny_runs.memorized_conversations() back: a calculator call, a worked sum, a
    quick answer with thinking off (the tool, reasoning and serving tests)."""
    return memorized_run(str(tmp_path_factory.mktemp("memorized") / "run"))


# torchrun --standalone picks a free port at start; on a busy machine another process can take it first
# (seen once in CI). Those start-up failures are retried once; any failure of the training itself is not.
RENDEZVOUS_ERRORS = ("EADDRINUSE", "Address already in use", "RendezvousConnectionError", "RendezvousTimeoutError",
                     "failed to listen", "Connection reset by peer", "DistNetworkError")


def torchrun(script, args, nproc=2, timeout=300):
    """Run `script args` under torchrun with nproc CPU processes; asserts success and returns the CompletedProcess."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), script, *args]
    for attempt in range(2):
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if r.returncode == 0 or not any(e in r.stderr for e in RENDEZVOUS_ERRORS):
            break
    assert r.returncode == 0, f"torchrun {script} failed (attempt {attempt + 1}):\n{r.stderr[-6000:]}"
    return r


# CI (MINILLM_REQUIRE_EXTRAS=1, set by .ci/run) must run every interop test: a skip there means an install step is
# missing (a fresh venv once lacked accelerate and peft while a developer's machine hid it), so it fails instead.
# The only skips allowed are for hardware CI does not have; their reasons start with HARDWARE_SKIP.
HARDWARE_SKIP = "needs hardware:"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("MINILLM_REQUIRE_EXTRAS") != "1" or not report.skipped:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not reason.removeprefix("Skipped: ").startswith(HARDWARE_SKIP):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every optional package is installed (MINILLM_REQUIRE_EXTRAS=1): {reason}"
