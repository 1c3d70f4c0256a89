"""Tiny stage runs shared by the tests and the exercises (exercises/harness.py imports this too)."""
import train_pretrain
import train_reward
import train_sft

# Flags that make any stage run in seconds: a tiny model, tiny batches, fp32 (bit-exact resume, and a student's right
# answer matches the project's to rounding), no plots.
FAST = ["--config", "tiny", "--batch-size", "4", "--seq-len", "64", "--eval-iters", "2", "--log-interval", "1",
        "--dtype", "float32", "--warmup-steps", "2", "--no-plot"]


def make_chain(root):
    """A short pretrain -> SFT -> reward chain on the built-in data in root/<stage>; returns {stage: run dir}."""
    dirs = {stage: str(root / stage) for stage in ("pretrain", "sft", "reward")}
    train_pretrain.main(FAST + ["--max-steps", "30", "--eval-interval", "30", "--vocab-size", "512", "--out-dir", dirs["pretrain"]])
    train_sft.main(FAST + ["--max-steps", "6", "--eval-interval", "6", "--init-from", dirs["pretrain"], "--out-dir", dirs["sft"],
                           "--eval-max-new-tokens", "8"])
    train_reward.main(FAST + ["--max-steps", "4", "--eval-interval", "4", "--init-from", dirs["sft"], "--out-dir", dirs["reward"]])
    return dirs
