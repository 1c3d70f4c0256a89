"""Exercise 08: chat template and SFT loss mask. Compared with tokenizer.apply_chat_template and data.sft_batch, then
put into train_sft.py: the same run as the project's."""
import random

import pytest
import torch

import builtin_data
import tokenizer as tokenizer_module
import train_sft
from harness import FAST, expect_equal, load, same_run_as_the_projects

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "2 plus 3 is 5."}],
    [{"role": "system", "content": "你是一个乐于助人的助手。"}, {"role": "user", "content": "米拉住在哪里？"},
     {"role": "assistant", "content": "米拉住在橡谷。"}, {"role": "user", "content": "谢谢"},
     {"role": "assistant", "content": "不客气！"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}],
]


@pytest.fixture(scope="module")
def tok():
    texts = builtin_data.pretrain_texts(seed=0)[:200]
    return tokenizer_module.BPETokenizer.train(texts, vocab_size=400, verbose=False)


def test_sft_mask_render_chat_equals_the_projects_template_and_mask(tok):
    sft = load("sft_mask")
    for i, messages in enumerate(CONVERSATIONS):
        for gen in (False, True):
            mine, theirs = sft.render_chat(tok, messages, gen), tok.apply_chat_template(messages, gen)
            expect_equal(list(mine[0]), theirs[0], f"ids of conversation {i} (add_generation_prompt={gen})")
            expect_equal(list(mine[1]), theirs[1], f"mask of conversation {i} (add_generation_prompt={gen})")


def test_sft_mask_moves_with_the_targets():
    sft = load("sft_mask")
    ids, mask = [10, 11, 12, 13, 14, 15], [0, 0, 1, 1, 0, 0]
    x, y, loss_mask = sft.shift_for_loss(ids, mask)
    expect_equal((list(x), list(y), list(loss_mask)), ([10, 11, 12, 13, 14], [11, 12, 13, 14, 15], [0, 1, 1, 0, 0]),
                 "shift_for_loss([10..15], [0, 0, 1, 1, 0, 0]) as (x, y, loss_mask)")


def test_sft_mask_trains_only_on_the_assistants_tokens(tok):
    sft = load("sft_mask")
    ids, mask = sft.render_chat(tok, CONVERSATIONS[1])
    x, y, loss_mask = sft.shift_for_loss(ids, mask)
    trained = tok.decode([t for t, m in zip(y, loss_mask) if m])
    expect_equal(trained, "米拉住在橡谷。<|im_end|>不客气！<|im_end|>", "the text the loss is computed on")


def sft_batch_using(render_shift):
    """data.sft_batch with the shift written by the student (padding as the project does: pad ids, mask 0)."""
    def sft_batch(dataset, indices, pad_id, turn_drop_prob=0.0, seed=0, position=0):
        rng = random.Random(seed * 1_000_003 + position)
        rows = [render_shift([int(t) for t in ids], [int(m) for m in mask])
                for ids, mask in (dataset.get(i, turn_drop_prob, rng) for i in indices)]
        T = max(len(x) for x, _, _ in rows)
        x = torch.tensor([list(x) + [pad_id] * (T - len(x)) for x, _, _ in rows])
        y = torch.tensor([list(y) + [pad_id] * (T - len(y)) for _, y, _ in rows])
        loss_mask = torch.tensor([list(m) + [0] * (T - len(m)) for _, _, m in rows])
        return x, y, loss_mask
    return sft_batch


def test_sft_mask_in_train_sft_gives_the_projects_run(monkeypatch, tmp_path, request):
    sft = load("sft_mask")
    sft.shift_for_loss([1, 2], [0, 1])
    chain = request.getfixturevalue("chain")
    argv = FAST + ["--max-steps", "8", "--eval-interval", "4", "--init-from", chain["pretrain"], "--eval-max-new-tokens", "4"]
    render = lambda self, messages, add_generation_prompt=False: sft.render_chat(self, messages, add_generation_prompt)
    same_run_as_the_projects(monkeypatch, tmp_path, train_sft, argv,
                             [(tokenizer_module.BPETokenizer, "apply_chat_template", render),
                              (train_sft, "sft_batch", sft_batch_using(sft.shift_for_loss))],
                             keys=("train_loss", "val_loss"))
