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
        "tokenizers", "lm_eval", "peft", "gguf", "data", "common"}


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


def test_the_worked_examples_in_the_key_docstrings_hold():
    """The minbpe-style examples a student reads in the docstrings are true."""
    import torch

    import train_dpo
    import train_grpo
    import train_ppo
    import train_utils as tu
    from tokenizer import merge, merge_with_deltas
    assert merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert merge_with_deltas([5, 1, 2, 3], (1, 2), 4) == ([5, 4, 3], [((5, 1), -1), ((5, 4), 1), ((2, 3), -1), ((4, 3), 1)])
    advantages, stds = train_grpo.group_advantages(torch.tensor([1., 0., 0., 0.]), 2, scale=False)
    assert advantages.tolist() == [0.5, -0.5, 0.0, 0.0] and round(stds[0].item(), 3) == 0.707
    advantages, _ = train_ppo.gae(torch.tensor([[0., 0., 1.]]), torch.zeros(1, 3), torch.ones(1, 3), 1.0, 1.0)
    assert advantages.tolist() == [[1.0, 1.0, 1.0]]
    loss, chosen, rejected = train_dpo.dpo_loss(torch.tensor([-1.]), torch.tensor([-3.]), torch.tensor([-2.]),
                                                torch.tensor([-2.]), 0.1)
    assert round(loss.item(), 3) == 0.598 and round(chosen.item(), 3) == 0.1 and round(rejected.item(), 3) == -0.1
    assert tu.track_best(0, 6.8, float("inf"), None, 0, 0.0) == (False, 6.8, 0)
    assert tu.track_best(100, 0.9, float("inf"), 6.8, 0, 0.0) == (True, 6.8, 0)
    assert tu.best_summary(400, 0.39, 6.79) == "best checkpoint: step 400, val loss 0.3900 (step 0: 6.7900)"
