"""Exercise 06: warmup + cosine. Compared with train_utils.get_lr at every step, then used by train_pretrain.py."""
from argparse import Namespace

import train_utils
from harness import FAST, curve, expect_close, expect_equal, load, run_stage


def test_lr_schedule_equals_the_projects_at_every_step():
    sched = load("lr_schedule")
    for lr, min_lr, warmup, decay in ((1e-3, 1e-4, 10, 100), (3e-4, 0.0, 1, 20), (5e-4, 5e-5, 0, 50), (1e-3, 1e-4, 5, 5)):
        args = Namespace(lr=lr, min_lr=min_lr, warmup_steps=warmup, lr_decay_steps=decay)
        mine = [sched.get_lr(s, lr, min_lr, warmup, decay) for s in range(decay + 10)]
        theirs = [train_utils.get_lr(s, args) for s in range(decay + 10)]
        expect_close(mine, theirs, f"lr at steps 0..{decay + 9} (lr {lr}, min_lr {min_lr}, warmup {warmup}, decay {decay})",
                     atol=1e-12, rtol=1e-9)


def test_lr_schedule_drives_train_pretrain(monkeypatch, tmp_path, data_cache):
    sched = load("lr_schedule")
    sched.get_lr(0, 1e-3, 1e-4, 2, 10)
    used = []

    def get_lr(step, args):  # what train_pretrain.py calls at the top of every step, with your schedule inside
        used.append(sched.get_lr(step, args.lr, args.min_lr, args.warmup_steps, args.lr_decay_steps))
        return used[-1]

    monkeypatch.setattr(train_utils, "get_lr", get_lr)
    import train_pretrain
    rows = run_stage(train_pretrain, FAST + ["--max-steps", "20", "--eval-interval", "20", "--vocab-size", "512",
                                             "--warmup-steps", "5", "--lr-decay-steps", "15", "--out-dir",
                                             str(tmp_path / "run")], show=("lr", "train_loss", "val_loss"))
    expect_equal(curve(rows, "lr"), used[:len(curve(rows, "lr"))], "the lr train_pretrain.py logged at each step")
    val = curve(rows, "val_loss")
    assert val[-1] < val[0] - 0.5, f"val loss {val[0]:.3f} -> {val[-1]:.3f} with your schedule"
