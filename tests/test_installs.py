"""Installs stay reproducible: both requirement files read constraints.txt, which pins every package they name (and
their dependencies) to one version, the one CI tested; .ci/upgrade is the one way to move them."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def names(path):
    """The package names a requirements file asks for, and its -c lines."""
    wanted, constraints = [], []
    for line in open(os.path.join(ROOT, path), encoding="utf-8"):
        line = line.split("#")[0].strip()
        if line.startswith("-c "):
            constraints.append(line[3:].strip())
        elif line:
            wanted.append(re.split(r"[=<>!~\[ ]", line)[0].lower().replace("_", "-"))
    return wanted, constraints


def pins():
    found = {}
    for n, line in enumerate(open(os.path.join(ROOT, "constraints.txt"), encoding="utf-8"), 1):
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
            assert match, f"constraints.txt, line {n}: {line.strip()!r} is not name==version"
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_every_requirement_is_pinned_by_the_constraints_both_files_read():
    pinned = pins()
    for path in ("requirements.txt", "requirements-extras.txt"):
        wanted, constraints = names(path)
        assert constraints == ["constraints.txt"], f"{path}: should read -c constraints.txt"
        assert wanted and not [w for w in wanted if w not in pinned], (path, [w for w in wanted if w not in pinned])
    assert pinned["torch"] == "2.13.0"  # not 2.13.0+cpu: the CPU wheel's local tag would refuse CUDA machines' wheel


def test_the_upgrade_path_ignores_the_pins_runs_the_suite_and_only_then_rewrites_them():
    script = open(os.path.join(ROOT, ".ci", "upgrade"), encoding="utf-8").read()
    assert "grep -v '^-c '" in script and "--upgrade" in script
    assert script.index("pytest tests") < script.index("pip freeze") < script.index("mv ")
    assert "upgrade-check:" in open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
