"""Reference solution of exercise 08 (chat template and SFT mask); the statement is in exercises/stubs/sft_mask.py."""


def render_chat(tokenizer, messages, add_generation_prompt=False):
    ids, mask = [], []
    newline = tokenizer.encode("\n")
    for message in messages:
        header = [tokenizer.bos_id] + tokenizer.encode(message["role"] + "\n")
        body = tokenizer.encode(message["content"]) + [tokenizer.eos_id]
        ids += header + body + newline
        mask += [0] * len(header) + [int(message["role"] == "assistant")] * len(body) + [0] * len(newline)
    if add_generation_prompt:
        header = [tokenizer.bos_id] + tokenizer.encode("assistant\n")
        ids += header
        mask += [0] * len(header)
    return ids, mask


def shift_for_loss(ids, mask):
    return list(ids[:-1]), list(ids[1:]), list(mask[1:])  # the mask moves with the targets
