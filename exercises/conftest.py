"""pytest plumbing for the exercises: which implementation is tested (--impl) and failures in one readable line.

    pytest exercises -k rmsnorm                 # your exercises/my_work/rmsnorm.py
    pytest exercises --impl solution            # the reference solutions (what CI checks)
    pytest exercises --impl stub                # the untouched stubs: every test fails, one line each
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]  # the project's flat modules, then harness.py
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

import harness  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--impl", choices=sorted(harness.FOLDERS), default=os.environ.get("MINILLM_EXERCISE_IMPL", "mine"),
                     help="whose code the exercises test: mine (exercises/my_work/, the default), solution or stub")


def pytest_configure(config):
    harness.IMPL = config.getoption("--impl")
    if config.option.tbstyle == "auto":
        config.option.tbstyle = "short"  # a student needs the line of their code that failed, not torch's internals
    if config.option.showcapture == "all":
        config.option.showcapture = "stdout"  # a failed run's stderr is progress bars; its stdout has the curves


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # an exercise not written yet (the stub's NotImplementedError) or not started (no file) is one line, no traceback
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance((NotImplementedError, harness.NotStarted)):
        report.longrepr = f"{item.name}: {call.excinfo.value}"


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    """One token cache for every run of the session: the built-in data is tokenized once."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["MINIGPT_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def chain(tmp_path_factory, data_cache):
    """A short pretrain -> SFT -> reward chain on the built-in data, made with the project's own code; the exercises
    that plug into a later stage start from it."""
    return harness.make_chain(tmp_path_factory.mktemp("chain"))
