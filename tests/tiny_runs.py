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


# A model that has learned three conversations by heart: a calculator call and its answer, a worked sum with its
# reasoning, and the same question with thinking off. Real generation through the real template, in seconds: what
# the tool, reasoning and serving tests run on (a model that must work these out itself is the chains' job).
TOOL_QUESTION, TOOL_EXPRESSION, TOOL_ANSWER = "What is 478 plus 356?", "478 + 356", "478 plus 356 is 834."
THINK_QUESTION, THINK_STEPS, THINK_ANSWER = (
    "What is 12 plus 30?", "2 + 0 = 2, write 2.\n1 + 3 = 4, write 4.\nSo 12 + 30 = 42.", "12 plus 30 is 42.")
QUICK_QUESTION, QUICK_ANSWER = "What is 5 plus 2?", "7."  # learned after an empty think block: thinking off


def memorized_conversations():
    import json

    import tools
    call = {"id": "call_0", "type": "function",
            "function": {"name": "calculator", "arguments": json.dumps({"expression": TOOL_EXPRESSION})}}
    system = {"role": "system", "content": "", "tools": [tools.CALCULATOR_TOOL]}
    return [
        [system, {"role": "user", "content": TOOL_QUESTION},
         {"role": "assistant", "content": "", "tool_calls": [call]},
         {"role": "tool", "tool_call_id": "call_0", "content": tools.calculate(TOOL_EXPRESSION)},
         {"role": "assistant", "content": TOOL_ANSWER}],
        [{"role": "user", "content": THINK_QUESTION},
         {"role": "assistant", "reasoning_content": THINK_STEPS, "content": THINK_ANSWER}],
        [{"role": "user", "content": QUICK_QUESTION}, {"role": "assistant", "reasoning_content": "", "content": QUICK_ANSWER}],
    ]


def memorized_run(path, steps=200):
    """A run directory (tokenizer.json, config.json, ckpt_best.pt) of a small model trained on
    memorized_conversations() until it says them back; returns path."""
    import os

    import torch
    import torch.nn.functional as F

    from model import MiniGPT, MiniGPTConfig
    from tokenizer import BPETokenizer
    from train_utils import save_checkpoint, write_json
    conversations = memorized_conversations()
    bare = BPETokenizer()
    texts = [bare.decode(bare.apply_chat_template(c)[0], skip_special_tokens=True) for c in conversations]
    tok = BPETokenizer.train(texts * 4, 300, verbose=False)
    torch.manual_seed(0)
    cfg = MiniGPTConfig(vocab_size=tok.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=256)
    model = MiniGPT(cfg)
    samples = [tok.apply_chat_template(c) for c in conversations]
    T = max(len(ids) for ids, _ in samples)
    ids = torch.tensor([i + [tok.pad_id] * (T - len(i)) for i, _ in samples])
    mask = torch.tensor([m[1:] + [0] * (T - len(m)) for _, m in samples], dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        per_token = F.cross_entropy(model(ids[:, :-1]).logits.transpose(1, 2), ids[:, 1:], reduction="none")
        loss = ((per_token * mask).sum(1) / mask.sum(1)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    write_json(os.path.join(path, "config.json"), {"stage": "sft", "model": cfg.to_dict()})
    save_checkpoint(os.path.join(path, "ckpt_best.pt"), {"model": model.state_dict(), "model_config": cfg.to_dict()})
    return path
