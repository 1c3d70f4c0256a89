"""Exercise 08 - the chat template and the SFT loss mask (plugs into: tokenizer.py apply_chat_template and
data.py sft_batch, used by train_sft.py)

English. Supervised fine-tuning (SFT) trains on conversations rendered in ChatML, each message as
    <|im_start|>{role}\\n{content}<|im_end|>\\n
and only the assistant's words carry loss: the model should learn to answer, not to write the user's questions.
`render_chat` returns the token ids and a mask that is 1 on each assistant message's content AND its closing
<|im_end|> (the model must learn when to stop), 0 on everything else (the <|im_start|>role\\n header, the newline
after <|im_end|>, system and user messages). Encode the header (bos_id, then encode(role + "\\n")) and the body
(encode(content), then eos_id) separately so the mask boundary is exact. With add_generation_prompt, append the
header of an assistant turn (mask 0): the model continues from there.
`shift_for_loss` makes the training example: inputs x = ids[:-1], targets y = ids[1:], and the loss mask must move
with the targets - loss_mask[t] says whether y[t] (not x[t]) is an assistant token. Why: this off-by-one is the bug
MiniMind's users keep filing; get it wrong and the model trains on predicting the user or never learns to stop.

中文。监督微调（SFT）在 ChatML 格式的对话上训练，每条消息渲染为
    <|im_start|>{role}\\n{content}<|im_end|>\\n
只有助手（assistant）说的话计入损失：模型要学的是回答，而不是写出用户的问题。`render_chat` 返回 token id 和一个
掩码：在每条助手消息的内容及其结尾的 <|im_end|> 上为 1（模型必须学会何时停止），其余为 0（<|im_start|>role\\n 头、
<|im_end|> 后的换行、system 和 user 消息）。把头（bos_id，再 encode(role + "\\n")）与正文（encode(content)，再 eos_id）
分开编码，掩码边界才准确。add_generation_prompt 为真时，在末尾加上助手回合的头（掩码 0），模型从那里接着写。
`shift_for_loss` 生成训练样本：输入 x = ids[:-1]，目标 y = ids[1:]，损失掩码必须跟着目标一起移位——loss_mask[t]
表示 y[t]（而不是 x[t]）是否是助手的 token。为什么：这个差一错误（off-by-one）正是 MiniMind 用户不断报告的 bug；
弄错了，模型就会去学预测用户的话，或者永远学不会停止。

Check: pytest exercises -k sft_mask        Reference: tokenizer.py (apply_chat_template), data.py (sft_batch)
"""


def render_chat(tokenizer, messages, add_generation_prompt=False):
    """messages: [{"role": "system" | "user" | "assistant", "content": str}, ...] -> (ids, mask), two lists of ints.
    Use tokenizer.encode(text), tokenizer.bos_id (<|im_start|>) and tokenizer.eos_id (<|im_end|>)."""
    raise NotImplementedError("exercise sft_mask: write render_chat() (the statement is at the top of the file)")


def shift_for_loss(ids, mask):
    """ids, mask: lists of the same length n -> (x, y, loss_mask), three lists of length n - 1."""
    raise NotImplementedError("exercise sft_mask: write shift_for_loss() (the statement is at the top of the file)")
