"""Start an exercise: copy its stub to exercises/my_work/<name>.py, your own file (git ignores my_work/, so `git pull`
never conflicts with your work). Without a name, list the exercises and which ones you have started.

    python exercises/start.py            # the list
    python exercises/start.py rmsnorm    # then edit exercises/my_work/rmsnorm.py and run: pytest exercises -k rmsnorm
"""
import argparse
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ["bpe", "rmsnorm", "swiglu", "rope", "attention", "lr_schedule", "grad_accum", "sft_mask", "reward_loss",
         "dpo_loss", "ppo", "grpo", "lora"]  # the order they are taught in (exercises/README.md)


def main(argv):
    p = argparse.ArgumentParser(description="Start an exercise: copy its stub to exercises/my_work/NAME.py; "
                                            "without NAME, list the exercises and which ones you have started.")
    p.add_argument("name", nargs="?", help=f"one of: {', '.join(ORDER)}")
    name = p.parse_args(argv).name
    if name is None:
        for i, name in enumerate(ORDER, 1):
            started = os.path.exists(os.path.join(HERE, "my_work", f"{name}.py"))
            print(f"{i:>2}. {name:<12} {'started: exercises/my_work/' + name + '.py' if started else 'not started'}")
        return 0
    if name not in ORDER:
        print(f"start.py: no exercise {name!r}; choose one of: {', '.join(ORDER)}", file=sys.stderr)
        return 2
    target = os.path.join(HERE, "my_work", f"{name}.py")
    if os.path.exists(target):
        print(f"start.py: exercises/my_work/{name}.py exists already (your work): not overwritten; delete it to start over",
              file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(os.path.join(HERE, "stubs", f"{name}.py"), target)
    print(f"exercises/my_work/{name}.py: read the statement at its top, fill in the functions, then run\n"
          f"    pytest exercises -k {name}        (add -s to watch the training runs it makes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
