"""How the flat modules depend on each other: inference never pulls in training code, no import cycle, and imports
at the top of each module except those of optional packages (and the tokenizer's torch-free CLI)."""
import ast
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "*.py"))}
# a function may import these where it needs them: optional packages (a clear message if missing), matplotlib
# (~0.5 s at start-up for runs that never plot), and data/common in tokenizer.py's CLI (the module stays torch-free)
LAZY = {"transformers", "safetensors.torch", "psutil", "matplotlib", "matplotlib.pyplot", "torch.utils.tensorboard",
        "tokenizers", "lm_eval", "peft", "data", "common"}


def imports(path, top_level_only=False):
    """(module imported, line, inside a function) for every import in a file."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [(name, node.lineno, node.col_offset > 0) for name in names if name]
    return found


def test_inference_scripts_do_not_import_training_code():
    code = ("import sys, generate, serve, eval_benchmarks, export_hf, tokenizer; "
            "print(sorted(m for m in sys.modules if m.startswith('train')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_the_project_modules_import_each_other_without_a_cycle():
    graph = {m: {name.split(".")[0] for name, _, _ in imports(os.path.join(ROOT, f"{m}.py"))} & MODULES - {m}
             for m in MODULES}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            assert state.get(n) != "open", f"import cycle: {' -> '.join(path + [n])}"
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])


def test_imports_are_at_the_top_of_each_module():
    inside = [f"{m}.py:{line} imports {name}" for m in sorted(MODULES)
              for name, line, nested in imports(os.path.join(ROOT, f"{m}.py")) if nested and name not in LAZY]
    assert not inside, inside
