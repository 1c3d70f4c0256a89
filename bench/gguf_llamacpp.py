"""
llama.cpp runs our GGUF export with our tokens: export a run directory with export_gguf.py in each --types, load it
with llama-cpp-python (llama.cpp built from the registry's source), and compare with our own code:
  - tokenization: llama.cpp's ids equal ours on a corpus of English, Chinese, digits, code and special-token
    look-alikes (parse_special off, as our encode; on, for the chat-templated text);
  - greedy continuations: 20 prompts (English, Chinese, chat-templated) x --new-tokens, token for token against
    generate.py's greedy loop in fp32; agreement = the share of prompts whose continuations are identical;
  - create_chat_completion with the GGUF's own chat template answers a built-in question as our chat does.

    pip install llama-cpp-python --no-binary llama-cpp-python   # builds llama.cpp (gcc, g++, cmake; ~5 min on 2 cores)
    python bench/gguf_llamacpp.py --run checkpoints/sft_tiny --types f32 f16 q8_0

Prints one row per type and writes gguf_llamacpp_results.json into --out.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

import builtin_data  # noqa: E402
from export_gguf import export  # noqa: E402
from generate import GenerationConfig, TextGenerator  # noqa: E402
from model import load_model  # noqa: E402
from tokenizer import BPETokenizer  # noqa: E402
from train_utils import cli  # noqa: E402

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Once upon a time, a little owl lived in Riverton.",
          "孙悟空大闹天宫，天宫大乱。小猫喜欢吃鱼。", "In 2024 it cost 1234567.89 $, or 12 345 yuan.",
          "def f(x):\n    return x ** 2  # square\n\n\n", "<|im_start|>user\nhi<|im_end|> <think> </tool_call>",
          "don't we'll THEY'RE  ok\t!  \n  ", "Mira的朋友Juno住在河镇。She has 3 cats and 42 fish."]


def prompts(tokenizer):
    """20 prompts as token ids: 8 English and 6 Chinese story starts (with <|im_start|>, as generate.py adds), and 6
    built-in questions through the chat template."""
    plain = ["Once upon a time", "One day, Lumi met", "The owl from Riverton", "Mira liked to eat",
             "In the morning the fox", "Juno wore a", "The little rabbit said", "Tess lived in",
             "从前", "有一天，小猫", "米洛喜欢吃", "河镇里住着", "小狐狸说", "早上，"]
    questions = [q["prompt"] for q in builtin_data.checkable_prompts(split="heldout")[:6]]
    ids = [[tokenizer.bos_id] + tokenizer.encode(p) for p in plain]
    ids += [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)[0] for q in questions]
    return ids, plain + questions


def ours_greedy(generator, prompt_ids, n, eos):
    out = []
    for ids in prompt_ids:
        new = generator.generate_ids([ids], GenerationConfig(max_new_tokens=n, greedy=True))[0]
        out.append(new[:new.index(eos) + 1] if eos in new else new)
    return out


def llama_greedy(llm, prompt_ids, n, eos):
    out = []
    for ids in prompt_ids:
        llm.reset()
        new = []
        for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            new.append(int(token))
            if token == eos or len(new) == n:
                break
        out.append(new)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--run", required=True, help="run directory (trained with the default tokenizer pattern)")
    p.add_argument("--types", nargs="+", default=["f32", "f16", "q8_0"])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--out", default=os.path.join(ROOT, "bench"))
    args = p.parse_args(argv)
    try:
        import llama_cpp
    except ImportError as e:
        raise SystemExit(f"error: needs llama-cpp-python (it builds llama.cpp): pip install llama-cpp-python ({e})")
    tokenizer = BPETokenizer.load(os.path.join(args.run, "tokenizer.json"))
    model = load_model(args.run)
    generator = TextGenerator(model, tokenizer)
    prompt_ids, prompt_texts = prompts(tokenizer)
    with torch.no_grad():
        ours = ours_greedy(generator, prompt_ids, args.new_tokens, tokenizer.eos_id)
    question = builtin_data.checkable_prompts(split="heldout")[0]
    chat = [{"role": "user", "content": question["prompt"]}]
    our_answer = tokenizer.decode(ours_greedy(generator, [tokenizer.apply_chat_template(chat, add_generation_prompt=True)[0]],
                                              64, tokenizer.eos_id)[0], skip_special_tokens=True)
    rows, folder = [], tempfile.mkdtemp()
    for out_type in args.types:
        path = export(args.run, os.path.join(folder, f"model-{out_type}.gguf"), out_type)
        llm = llama_cpp.Llama(model_path=path, n_ctx=model.config.max_seq_len, n_threads=os.cpu_count(), verbose=False)
        plain_equal = sum(llm.tokenize(t.encode(), add_bos=False, special=False) == tokenizer.encode(t) for t in CORPUS)
        special_equal = sum(llm.tokenize(t.encode(), add_bos=False, special=True) == tokenizer.encode(t, allow_special=True)
                            for t in CORPUS)
        started = time.time()
        theirs = llama_greedy(llm, prompt_ids, args.new_tokens, tokenizer.eos_id)
        seconds = time.time() - started
        same = [a == b for a, b in zip(ours, theirs)]
        first_diff = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                      for a, b in zip(ours, theirs)]
        reply = llm.create_chat_completion(messages=chat, max_tokens=64, temperature=0.0, top_k=1)
        their_answer = reply["choices"][0]["message"]["content"]
        row = {"type": out_type, "file_mib": round(os.path.getsize(path) / 2 ** 20, 2),
               "tokenization_equal": f"{plain_equal}/{len(CORPUS)}", "special_tokenization_equal": f"{special_equal}/{len(CORPUS)}",
               "greedy_identical": f"{sum(same)}/{len(same)}", "tokens_agreeing_before_first_difference": sum(first_diff),
               "tokens_compared": sum(len(a) for a in ours), "llama_cpp_seconds": round(seconds, 2),
               "chat_answer": their_answer, "chat_answer_equal": their_answer.strip() == our_answer.strip(),
               "chat_answer_right": bool(builtin_data.check_answer(their_answer, question["answer"]))}
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False))
        for text, a, b, ok in zip(prompt_texts, ours, theirs, same):
            if not ok:
                print(f"  differs on {text!r}: ours {tokenizer.decode(a)!r} / llama.cpp {tokenizer.decode(b)!r}")
        del llm
    print(f"our chat answer: {our_answer!r}")
    result = {"run": args.run, "rows": rows, "our_chat_answer": our_answer, "llama_cpp_python": llama_cpp.__version__,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "new_tokens": args.new_tokens}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gguf_llamacpp_results.json"), "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    cli(main)
