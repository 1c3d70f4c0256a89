"""
Data: read every supported file format into a few normalised record kinds, sample and split them, and serve
batches to the training loops.

Record kinds (what each stage consumes):
  text    a document string                                            (pretraining)
  chat    [{"role": "system"|"user"|"assistant", "content": str}, ...] (SFT)
  pair    {"prompt": [messages], "chosen": str, "rejected": str}       (reward model, DPO)
  prompt  {"prompt": [messages], "answer": str or None}                (PPO)

File formats, detected per file from the first record (or forced with --format):
  text           .txt: documents separated by blank lines
  jsonl-text     {"text": ...}                                   MiniMind pretrain_hq.jsonl
  minimind-chat  {"conversations": [{"role", "content"}]}        MiniMind sft_*.jsonl
  openai         {"messages": [{"role", "content"}]}
  sharegpt       {"conversations": [{"from", "value"}]}
  alpaca         {"instruction", "input", "output"}              (.json array or .jsonl)
  minimind-dpo   {"chosen": [messages], "rejected": [messages]}  MiniMind dpo.jsonl
  pair           {"prompt": str, "chosen": str, "rejected": str}
  sharegpt-pair  {"conversations": [{"from", "value"}], "chosen", "rejected"}
  hh-rlhf        {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}  (.jsonl or .jsonl.gz)
  prompt         {"prompt": str, "answer": str (optional)}
A turn may be {"role", "content"} or ShareGPT's {"from", "value"} in any of these lists.
Conversation formats also serve as prompts (everything before the last assistant turn).
"""
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

import builtin_data
from common import env_default, write_json
from tools import CALCULATOR_TOOL


class DataError(ValueError):
    """Bad input data: the message names file:line, the field and what was expected."""


FORMAT_KIND = {"text": "text", "jsonl-text": "text", "minimind-chat": "chat", "openai": "chat", "sharegpt": "chat",
               "alpaca": "chat", "minimind-dpo": "pair", "pair": "pair", "sharegpt-pair": "pair", "hh-rlhf": "pair",
               "prompt": "prompt"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


# ----------------------------------------------------------------------------- reading files

def _open(path):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_text(path):
    """A whole (optionally gzipped) file as text; undecodable bytes are a DataError naming file:line."""
    if not os.path.exists(path) or os.path.isdir(path):  # a pipe is fine: --data <(head -1000 big.jsonl)
        raise DataError(f"{path}: {'a folder, not a file' if os.path.isdir(path) else 'file not found'}")
    try:
        with _open(path) as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # not gzip, cut short, or damaged
        raise DataError(f"{path}: not a readable gzip file ({e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: bytes are not valid UTF-8 ({e.reason} at byte {e.start})") from None


SUPPORTED_FILES = ".txt or .raw (plain text), .json (an array of records), .jsonl or .jsonl.gz (one record per line)"
UNSUPPORTED_FILES = {".csv": "CSV", ".tsv": "TSV", ".parquet": "Parquet", ".arrow": "Arrow", ".xlsx": "Excel", ".xls": "Excel"}


def iter_raw_records(path):
    """(line_number, record) for a .txt (documents by blank lines), .json array, or .jsonl(.gz) file."""
    kind = UNSUPPORTED_FILES.get(os.path.splitext(path[:-3] if path.endswith(".gz") else path)[1].lower())
    if kind:  # else it is read as JSON Lines and fails on line 1 with "invalid JSON", which says nothing useful
        raise DataError(f"{path}: {kind} is not a supported format; use {SUPPORTED_FILES} (record formats: "
                        f"{', '.join(FORMAT_KIND)})")
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith(".txt") or name.endswith(".raw"):
        line = 1
        for para in re.split(r"\n\s*\n", text):
            if para.strip():
                yield line, para.strip("\n")
            line += para.count("\n") + 2
    elif os.path.splitext(name)[1] in (".json", "") and text.lstrip().startswith("["):  # "": a pipe, /dev/fd/N
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        yield from zip(_array_item_lines(text), records)
    else:
        first = True
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    # a pretty-printed object ({"data": [...]}) fails on its first line: say what the file is instead
                    whole = _json_or_none(text) if first else None
                    if isinstance(whole, dict):
                        raise DataError(f"{path}: one JSON object with keys {sorted(whole)[:5]}, not records: expected "
                                        "a JSON array of records or one record per line (JSON Lines)") from None
                    record = DataError(f"invalid JSON ({e.msg} at column {e.colno})")
                first = False
                yield i, record


def _json_or_none(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _array_item_lines(text):
    """The line on which each item of a (valid) top-level JSON array starts, so errors point where an editor shows."""
    decoder, pos, line, counted = json.JSONDecoder(), text.index("[") + 1, 1, 0
    while True:
        while text[pos] in " \t\r\n,":
            pos += 1
        if text[pos] == "]":
            return
        line, counted = line + text.count("\n", counted, pos), pos
        yield line
        pos = decoder.raw_decode(text, pos)[1]


def detect_format(record):
    if isinstance(record, str):
        return "text"
    if not isinstance(record, dict):
        return None
    keys = set(record)
    if ("chosen" in keys) != ("rejected" in keys):  # half a pair: say which field, not "cannot tell the format"
        raise DataError(f"missing field '{'rejected' if 'chosen' in keys else 'chosen'}' (a preference pair needs both)")
    if "chosen" in keys and "rejected" in keys:
        if "conversations" in keys:
            return "sharegpt-pair"
        if "prompt" in keys:
            return "pair"
        return "minimind-dpo" if isinstance(record["chosen"], list) else "hh-rlhf"
    if "text" in keys:
        return "jsonl-text"
    if "messages" in keys:
        return "openai"
    if "conversations" in keys:
        convs = record["conversations"]
        return "sharegpt" if convs and isinstance(convs[0], dict) and "from" in convs[0] else "minimind-chat"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "prompt" in keys:
        return "prompt"
    return None


def _field(record, name, typ):
    if name not in record:
        raise DataError(f"missing field '{name}'")
    value = record[name]
    if not isinstance(value, typ):
        expected = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise DataError(f"field '{name}' should be {expected}, got {type(value).__name__}")
    return value


INLINE_THINK = re.compile(r"\s*<think>(.*?)</think>\s*(?:<answer>(.*)</answer>\s*)?", re.S)


def _tool_calls(calls, where):
    """OpenAI tool calls, checked: [{"id"?, "type": "function", "function": {"name", "arguments" (JSON text)}}]."""
    if not isinstance(calls, list):
        raise DataError(f"field '{where}' should be a list")
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise DataError(f"field '{where}[{j}].function.name' should be str")
        arguments = fn.get("arguments", {})
        if isinstance(arguments, str):
            try:
                json.loads(arguments)
            except json.JSONDecodeError:
                raise DataError(f"field '{where}[{j}].function.arguments' is not valid JSON: {arguments[:60]!r}") from None
        elif isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        else:
            raise DataError(f"field '{where}[{j}].function.arguments' should be a JSON string or an object")
        out.append({**({"id": call["id"]} if isinstance(call.get("id"), str) else {}), "type": "function",
                    "function": {"name": fn["name"], "arguments": arguments}})
    return out


def _messages(items, field):
    """Chat turns as [{"role", "content"}], from {"role", "content"} items or ShareGPT's {"from", "value"} ones
    (some datasets put those under "messages", some put role/content under "conversations"). OpenAI / MiniMind-3
    extras are kept: an assistant's reasoning_content and tool_calls (content may then be null), role "tool" with
    tool_call_id. Reasoning written inline, as MiniMind's r1 files do ("<think>...</think> answer", the answer
    optionally in <answer>...</answer>), becomes reasoning_content."""
    if not items:
        raise DataError(f"field '{field}' is an empty list")
    out = []
    for i, m in enumerate(items):
        sharegpt = isinstance(m, dict) and "from" in m and "role" not in m
        role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
        if not isinstance(m, dict) or role_key not in m or (content_key not in m and "tool_calls" not in m):
            raise DataError(f"field '{field}[{i}]' should be an object with '{role_key}' and '{content_key}'")
        role = SHAREGPT_ROLES.get(m[role_key], m[role_key]) if sharegpt else m[role_key]
        if role not in ("system", "user", "assistant", "tool"):
            raise DataError(f"field '{field}[{i}].{role_key}' is {m[role_key]!r}, expected system/user/assistant/tool")
        content = m.get(content_key)
        if not isinstance(content, str) and not (content is None and role == "assistant" and m.get("tool_calls")):
            raise DataError(f"field '{field}[{i}].{content_key}' should be str")
        msg = {"role": role, "content": content or ""}
        if role == "assistant":
            reasoning = m.get("reasoning_content")
            if reasoning is not None and not isinstance(reasoning, str):
                raise DataError(f"field '{field}[{i}].reasoning_content' should be str")
            inline = INLINE_THINK.match(msg["content"]) if reasoning is None else None
            if inline:
                reasoning = inline.group(1).strip("\n")
                msg["content"] = (inline.group(2) if inline.group(2) is not None else msg["content"][inline.end():]).strip()
            elif reasoning is None and "<think>" in msg["content"]:
                raise DataError(f"field '{field}[{i}].{content_key}' has <think> without a closing </think>")
            if reasoning is not None:
                msg["reasoning_content"] = reasoning
            if m.get("tool_calls"):
                msg["tool_calls"] = _tool_calls(m["tool_calls"], f"{field}[{i}].tool_calls")
        if role == "tool" and isinstance(m.get("tool_call_id"), str):
            msg["tool_call_id"] = m["tool_call_id"]
        out.append(msg)
    return out


def _with_tools(msgs, record):
    """The record's OpenAI `tools` list travels in the first system message (one is added if there is none), where
    tokenizer.chat_pieces renders it."""
    tools = record.get("tools")
    if tools is None:
        return msgs
    if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("function", t).get("name"), str)
                                              for t in tools):
        raise DataError("field 'tools' should be a list of {\"type\": \"function\", \"function\": {\"name\": ...}} objects")
    if msgs[0]["role"] != "system":
        msgs = [{"role": "system", "content": ""}] + msgs
    return [{**msgs[0], "tools": tools}] + msgs[1:]


def _hh_turns(transcript, field):
    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + transcript.lstrip("\n"))
    if len(parts) < 3:
        raise DataError(f"field '{field}' has no '\\n\\nHuman: ' / '\\n\\nAssistant: ' turns")
    turns = [{"role": "user" if r == "Human" else "assistant", "content": c} for r, c in zip(parts[1::2], parts[2::2])]
    if turns[-1]["role"] != "assistant":
        raise DataError(f"field '{field}' does not end with an Assistant turn")
    return turns


def _pair(prompt, chosen, rejected):
    if chosen == rejected:  # a tie carries no preference: it would only add log 2 to the loss and a 0 to accuracy
        raise DataError("fields 'chosen' and 'rejected' are the same reply")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def normalise(record, fmt):
    """One raw record in format fmt -> a record of that format's kind (see the module docstring)."""
    if fmt == "text":
        return record
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}")
    if fmt == "jsonl-text":
        return _field(record, "text", str)
    if fmt in ("minimind-chat", "openai", "sharegpt"):
        key = "messages" if fmt == "openai" else "conversations"
        items = _field(record, key, list)
        msgs = _messages(items, key)
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(f"field '{key}' has no assistant turn")
        return _with_tools(msgs, record)
    if fmt == "alpaca":
        instruction, inp = _field(record, "instruction", str), record.get("input") or ""
        if not isinstance(inp, str):
            raise DataError("field 'input' should be str")
        return [{"role": "user", "content": instruction + ("\n" + inp if inp else "")},
                {"role": "assistant", "content": _field(record, "output", str)}]
    if fmt == "minimind-dpo":
        chosen = _messages(_field(record, "chosen", list), "chosen")
        rejected = _messages(_field(record, "rejected", list), "rejected")
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            raise DataError("fields 'chosen'/'rejected' must end with an assistant message")
        return _pair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"])
    if fmt == "pair":
        return _pair([{"role": "user", "content": _field(record, "prompt", str)}], _field(record, "chosen", str),
                     _field(record, "rejected", str))
    if fmt == "sharegpt-pair":
        prompt = _messages(_field(record, "conversations", list), "conversations")
        value = lambda k: record[k]["value"] if isinstance(record.get(k), dict) else _field(record, k, str)
        return _pair(prompt, value("chosen"), value("rejected"))
    if fmt == "hh-rlhf":
        chosen = _hh_turns(_field(record, "chosen", str), "chosen")
        rejected = _hh_turns(_field(record, "rejected", str), "rejected")
        if chosen[:-1] != rejected[:-1]:
            raise DataError("'chosen' and 'rejected' differ before their last Assistant turn")
        return _pair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"])
    if fmt == "prompt":
        answer = record.get("answer")
        if answer is not None and not isinstance(answer, str):
            raise DataError("field 'answer' should be str")
        return {"prompt": [{"role": "user", "content": _field(record, "prompt", str)}], "answer": answer}
    raise DataError(f"unknown format {fmt!r}")


CONVERSIONS = {("chat", "prompt")}  # (record kind in the file, kind a stage needs) pairs that convert()


def convert(record, from_kind, to_kind):
    """Conversations also serve as prompts: the messages before the last assistant turn."""
    if from_kind == to_kind:
        return record
    if from_kind == "chat" and to_kind == "prompt":
        last = max(i for i, m in enumerate(record) if m["role"] == "assistant")
        return {"prompt": record[:last], "answer": None} if last else None
    return None


def _serves(fmt, kind):
    """Whether a file in format `fmt` gives records of `kind`, directly or through convert()."""
    return FORMAT_KIND[fmt] == kind or (FORMAT_KIND[fmt], kind) in CONVERSIONS


def read_records(path, kind, fmt=None, skip_bad_lines=False, skipped=None):
    """All records of `kind` in a file. Bad records raise DataError('file:line: ...'), or with skip_bad_lines
    are appended to `skipped` as 'file:line: reason' and left out."""
    if fmt is not None and fmt not in FORMAT_KIND:
        raise DataError(f"--format {fmt}: unknown; one of {', '.join(FORMAT_KIND)}")
    if fmt is not None and not _serves(fmt, kind):
        raise DataError(f"--format {fmt} holds {FORMAT_KIND[fmt]} records; this stage needs {kind}")
    records, detected = [], fmt
    for line, raw in iter_raw_records(path):
        try:
            if isinstance(raw, DataError):
                raise raw
            if detected is None:
                detected = detect_format(raw)
                if detected is None:
                    keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
                    raise DataError(f"cannot tell the format from fields {keys}; use --format")
                if not _serves(detected, kind):
                    raise DataError(f"format '{detected}' holds {FORMAT_KIND[detected]} records; this stage needs {kind}")
            rec = convert(normalise(raw, detected), FORMAT_KIND[detected], kind)
            if rec is None:
                raise DataError("no user turn before the last assistant turn")
            records.append(rec)
        except DataError as e:
            message = f"{path}:{line}: {e}"
            if not skip_bad_lines:
                raise DataError(f"{message} (fix the record, or pass --skip-bad-lines to skip and count bad records)") from None
            if skipped is not None:
                skipped.append(message)
    return records


# ----------------------------------------------------------------------------- sources, sampling, splitting

@dataclass
class Source:
    path: str                   # a file, or 'builtin' for the generated default data
    ratio: float = 1.0          # fraction of its records to use
    max_samples: int = None     # cap on its records


def parse_source(spec):
    """'file.jsonl', 'file.jsonl:0.5' (half of it) or 'file.jsonl:1.0:1000' (at most 1000 records)."""
    parts = spec.split(":")
    nums = []
    while len(parts) > 1 and re.fullmatch(r"[0-9.]+", parts[-1]):
        nums.insert(0, parts.pop())
    path = ":".join(parts)
    if not os.path.exists(path):  # 'corpus.txt:-1' or 'corpus.txt:half': a real file, then a bad suffix
        for i in range(len(parts) - 1, 0, -1):
            if os.path.isfile(":".join(parts[:i])):
                raise DataError(f"--data {spec}: expected path[:ratio[:max_samples]], got {':'.join(parts[i:])!r} after the path")
    try:
        ratio = float(nums[0]) if nums else 1.0
        max_samples = int(nums[1]) if len(nums) > 1 else None
        if len(nums) > 2:
            raise ValueError
    except ValueError:
        raise DataError(f"--data {spec}: expected path[:ratio[:max_samples]]") from None
    if not 0 < ratio <= 1:
        raise DataError(f"--data {spec}: ratio must be in (0, 1]")
    return Source(path, ratio, max_samples)


def builtin_records(kind):
    """The built-in data of one kind (training split). One fixed world for every stage: the training --seed must
    not change it, or SFT would ask about a world pretraining never described."""
    if kind == "text":
        return builtin_data.pretrain_texts()
    if kind == "chat":
        return builtin_data.sft_conversations(split="train")
    if kind == "pair":
        return builtin_data.preference_pairs(split="train")
    return prompt_records(builtin_data.checkable_prompts(split="train"))


# arithmetic-think-1-2: 1 or 2 digits; arithmetic-think-phrased: questions worded many ways (held out: other wordings);
# arithmetic-think-reworded: GRPO prompts in the held-out wordings only (RL on wordings SFT never saw)
ARITHMETIC_SOURCE = re.compile(r"arithmetic-(direct|think|scratch|restate-scratch|restate|place|tool)(-phrased|-reworded)?((?:-[1-9])*)")
ARITHMETIC_TRAIN_ITEMS = 20000  # distinct operand pairs are ~650k: the model sees few twice
# --data NAME -> the builtin_data function that makes its chores ([{"prompt", "response"}]), SFT data on numbers that
# works no sum: 2to3 footholds tried (BENCHMARKS.md)
CHAT_CHORES = {
    "digit-chores": builtin_data.digit_chores,      # what is left of two 2-4 digit numbers without their last digits
    "place-chores": builtin_data.place_chores,      # numbers of 1-5 digits read by place and put together
    "restate-chores": builtin_data.restate_chores,  # a sum of 1-5 digit numbers written with numbers and a sign
    "lineup-chores": lambda: builtin_data.restate_chores(place=True),  # the same sum lined up by place
}


def arithmetic_records(source, kind, split, n=None):
    """builtin_data.arithmetic_items as SFT conversations (kind chat) or as prompts with answers (kind prompt), answered
    the way the source names: arithmetic-direct (the answer), -think (worked steps as reasoning, then the answer),
    -scratch (the same steps with what is left and the answer so far on each line), -restate (the same steps after a
    line that copies the operands: arithmetic-restate-phrased reads unseen wordings as well as seen ones),
    -restate-scratch (the copy, then the scratchpad's lines: a 2to3 foothold tried), -place (the
    operands lined up by place, the columns named by place: a 2to3 foothold tried, builtin_data.worked_steps), -tool
    (a calculator call, its result, the answer; the calculator is offered in the system turn). Numbers have 3 digits,
    or the digit counts the source lists (arithmetic-think-1-2: 1 or 2). split 'heldout': operand pairs no training
    split holds. -phrased (arithmetic-think-phrased): each question in one of builtin_data.PHRASINGS' wordings, the
    training split's for training, the held-out wordings (never trained on) for 'heldout'. -reworded (prompts only,
    for GRPO): training operand pairs asked in the held-out wordings, so the checker is all that teaches them; its
    'heldout' split is -phrased's."""
    if kind not in ("chat", "prompt"):
        raise DataError(f"--data {source}: conversations (train_sft.py) or prompts (train_grpo.py); this stage needs {kind}")
    way, wording, digit_list = ARITHMETIC_SOURCE.fullmatch(source).groups()
    if wording == "-reworded" and kind == "chat":
        raise DataError(f"--data {source}: prompts for RL (train_grpo.py); SFT on it would show the held-out wordings")
    digits = tuple(int(d) for d in digit_list.split("-")[1:]) or (3,)
    phrasing = {None: None, "-phrased": split, "-reworded": "heldout"}[wording]
    items = builtin_data.arithmetic_items(split, n or (ARITHMETIC_TRAIN_ITEMS if split == "train" else 200), digits=digits,
                                          phrasing=phrasing, wrap=wording == "-phrased")
    tools = {"tools": [CALCULATOR_TOOL]} if way == "tool" else {}
    if kind == "chat":
        return [_with_tools(builtin_data.arithmetic_conversation(it, way), tools) for it in items]
    return [{"prompt": _with_tools([{"role": "user", "content": it["prompt"]}], tools), "answer": it["answer"]}
            for it in items]


def heldout_prompts(specs):
    """Held-out prompts for the built-in sources (questions, or operand pairs, that training never sees), or None."""
    if specs == ["builtin"]:
        return prompt_records(builtin_data.checkable_prompts(split="heldout"))
    if len(specs) == 1 and ARITHMETIC_SOURCE.fullmatch(specs[0]):
        return arithmetic_records(specs[0], "prompt", "heldout")
    return None


def prompt_records(items):
    """Questions with answers a program checks ([{"prompt", "answer"}]) as 'prompt'-format records."""
    return [{"prompt": [{"role": "user", "content": it["prompt"]}], "answer": it["answer"]} for it in items]


def load_datasets(specs, kind, seed=0, val_split=0.05, global_ratio=1.0, max_records=None, fmt=None,
                  skip_bad_lines=False, val_specs=None):
    """Read, sample and split every source. Returns (train_records, val_records, stats).

    Sampling and splitting are seeded per file (by its name), so the same flags always give the same data.
    val_specs: explicit validation files; then nothing is split off the training sources.
    """
    train, val, stats = [], [], {"sources": {}, "warnings": []}
    for spec, is_val in [(s, False) for s in specs] + [(s, True) for s in (val_specs or [])]:
        src = parse_source(spec)
        skipped = []
        if src.path == "builtin":
            records = builtin_records(kind)
        elif ARITHMETIC_SOURCE.fullmatch(src.path):  # worked sums and differences, answered one of three ways
            records = arithmetic_records(src.path, kind, "train")
        elif src.path == "builtin-numbers":  # numbers of 1-4 digits mentioned and repeated, no arithmetic
            if kind != "text":
                raise DataError(f"--data builtin-numbers: documents, for train_pretrain.py; this stage needs {kind}")
            records = builtin_data.number_texts()
        elif src.path == "builtin-places":  # numbers of 1-5 digits read by place and put together, no arithmetic
            if kind != "text":
                raise DataError(f"--data builtin-places: documents, for train_pretrain.py; this stage needs {kind}")
            records = builtin_data.place_texts()
        elif src.path == "tool-use":  # tools defined and asked many ways, distractors, questions for no tool
            if kind != "chat":
                raise DataError(f"--data tool-use: conversations, for train_sft.py; this stage needs {kind}")
            records = builtin_data.tool_use_conversations(ARITHMETIC_TRAIN_ITEMS)
        elif src.path == "builtin-made-up":  # made-up names and phrases said twice: copying, learned in pretraining
            if kind != "text":
                raise DataError(f"--data builtin-made-up: documents, for train_pretrain.py; this stage needs {kind}")
            records = builtin_data.made_up_texts()
        elif src.path in CHAT_CHORES:  # chores on numbers in chat form, no arithmetic worked (the 2to3 footholds)
            if kind != "chat":
                raise DataError(f"--data {src.path}: conversations, for train_sft.py; this stage needs {kind}")
            records = [[{"role": "user", "content": it["prompt"]}, {"role": "assistant", "content": it["response"]}]
                       for it in CHAT_CHORES[src.path]()]
        elif re.fullmatch(r"arithmetic(-[1-9])*", src.path):  # sums made on the fly, with answers a program checks
            if kind != "prompt":
                raise DataError(f"--data {src.path}: prompts with answers, for train_grpo.py / train_ppo.py; this stage needs {kind}")
            digits = tuple(int(d) for d in src.path.split("-")[1:]) or (2, 3)  # arithmetic-1: one-digit numbers
            records = prompt_records(builtin_data.arithmetic_prompts(digits=digits))
        else:
            records = read_records(src.path, kind, fmt, skip_bad_lines, skipped)
        rng = random.Random(seed * 1_000_003 + zlib.crc32(src.path.encode()))
        order = list(range(len(records)))
        rng.shuffle(order)
        n = len(records) if is_val else int(round(len(records) * src.ratio * global_ratio))
        if src.max_samples is not None:
            n = min(n, src.max_samples)
        picked = [records[i] for i in sorted(order[:n])]
        n_val = 0 if val_specs or is_val or n < 2 else max(1, int(round(n * val_split))) if val_split > 0 else 0
        val_idx = set(random.Random(seed + 7).sample(range(n), n_val)) if n_val else set()
        src_train = [r for i, r in enumerate(picked) if i not in val_idx and not is_val]
        src_val = picked if is_val else [r for i, r in enumerate(picked) if i in val_idx]
        train += src_train
        val += src_val
        key = ("val:" if is_val else "") + spec
        stats["sources"][key] = {"raw_records": len(records) + len(skipped), "sampled": n, "train": len(src_train),
                                 "validation": len(src_val), "skipped": len(skipped), "skipped_lines": skipped[:100]}
        if n == 0:
            stats["warnings"].append(f"{spec}: sampled to 0 records (ratio {src.ratio}, global {global_ratio})")
        if skipped:
            print(f"warning: {spec}: skipped {len(skipped)} bad records (listed in dataset_stats.json)")
    if max_records is not None and len(train) > max_records:
        train = train[:max_records]
    for w in stats["warnings"]:
        print(f"warning: {w}")
    if not train:
        raise DataError(f"no training records of kind '{kind}' in {', '.join(specs)}")
    return train, val, stats


# ----------------------------------------------------------------------------- pretraining: token cache

def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 65536 else np.uint32


def cache_key(parts):
    """A short hash of everything that decides the cached tokens (files' size and mtime, flags, tokenizer)."""
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, str) and os.path.isfile(p):
            st = os.stat(p)
            p = f"{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns}"
        h.update(str(p).encode())
    return h.hexdigest()[:16]


def write_token_file(path, texts, tokenizer, desc="tokenizing", batch_docs=256):
    """Tokenize documents as <|im_start|> text <|im_end|> (both cores, progress bar) straight into a binary file
    of token ids; returns (tokens per document, n_bytes). Written to a temp file and renamed, so a crash leaves
    no half cache."""
    dtype = token_dtype(tokenizer.vocab_size)
    doc_tokens, n_bytes = [], sum(len(t.encode("utf-8")) for t in texts)
    batches = [texts[i:i + batch_docs] for i in range(0, len(texts), batch_docs)]
    tmp = path + ".tmp"
    with open(tmp, "wb") as f, tqdm(total=len(texts), desc=desc, unit="doc", leave=False) as bar:
        for encoded in tokenizer.encode_stream(batches, add_special_tokens=True):
            np.fromiter((i for ids in encoded for i in ids), dtype=dtype).tofile(f)
            doc_tokens += [len(ids) for ids in encoded]
            bar.update(len(encoded))
    os.replace(tmp, path)
    return doc_tokens, n_bytes


def build_token_cache(train_texts, val_texts, tokenizer, cache_dir, key, stats=None):
    """Token files for train and val under cache_dir/key, built once; meta.json records counts, dtype and the
    dataset stats (with each source's token count filled in), so a cached run needs no re-reading."""
    d = os.path.join(cache_dir, key)
    meta_path = os.path.join(d, "meta.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            return d, json.load(f)
    # built in a folder of its own, renamed into place when complete: an interrupted run leaves no half cache
    made_cache_dir = not os.path.isdir(cache_dir)
    building = f"{d}.building-{os.getpid()}"
    os.makedirs(building)
    try:
        meta = {"dtype": np.dtype(token_dtype(tokenizer.vocab_size)).name, "vocab_size": tokenizer.vocab_size}
        doc_tokens = {}
        for split, texts in (("train", train_texts), ("val", val_texts)):
            doc_tokens[split], n_bytes = write_token_file(os.path.join(building, f"{split}.bin"), texts, tokenizer,
                                                          desc=f"tokenizing {split}")
            meta[split] = {"documents": len(texts), "tokens": int(sum(doc_tokens[split])), "bytes": n_bytes}
        if stats is not None:  # records are concatenated source by source, so each source is a slice of the documents
            start = {"train": 0, "val": 0}
            for source in stats["sources"].values():
                for split, count in (("train", source["train"]), ("val", source["validation"])):
                    source[f"{split}_tokens"] = int(sum(doc_tokens[split][start[split]:start[split] + count]))
                    start[split] += count
            meta["stats"] = stats
        with open(os.path.join(building, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        shutil.rmtree(d, ignore_errors=True)  # an unfinished cache of an older version
        os.replace(building, d)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        if made_cache_dir and not os.listdir(cache_dir):
            os.rmdir(cache_dir)
        raise
    return d, meta


class LanguageModelingDataset(torch.utils.data.Dataset):
    """Fixed-length blocks over a memmapped token file: block i is tokens[i*T : i*T + T + 1].

    Documents are packed back to back as <|im_start|> text <|im_end|>, so a block may span documents; the
    target after <|im_end|> is always <|im_start|>, which carries no information, so its loss_mask is 0.
    """

    def __init__(self, path, dtype, seq_len, bos_id=1):
        self.tokens = np.memmap(path, dtype=dtype, mode="r")
        self.seq_len, self.bos_id = seq_len, bos_id
        if len(self.tokens) < seq_len + 1:
            raise DataError(f"{path}: only {len(self.tokens)} tokens, fewer than one block of --seq-len {seq_len} + 1")

    def __len__(self):
        return (len(self.tokens) - 1) // self.seq_len

    def __getitem__(self, i):
        chunk = torch.from_numpy(self.tokens[i * self.seq_len: i * self.seq_len + self.seq_len + 1].astype(np.int64))
        x, y = chunk[:-1], chunk[1:]
        return x, y, (y != self.bos_id).long()


class EpochSampler:
    """Deterministic sample order: a seeded permutation per epoch, addressed by a global position.

    Batch contents depend only on (seed, position), so resume needs only the position, and DDP ranks and
    gradient-accumulation micro-steps simply take different slices of the same stream.
    """

    def __init__(self, n, seed):
        self.n, self.seed, self._perm_epoch, self._perm = n, seed, None, None

    def _permutation(self, epoch):
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def take(self, start, count):
        return [int(self._permutation(p // self.n)[p % self.n]) for p in range(start, start + count)]


def collate(items):
    """Stack (x, y, mask) samples into (B, T) tensors."""
    return tuple(torch.stack(t) for t in zip(*items))


def get_batch(dataset, indices):
    return collate([dataset[i] for i in indices])


# ----------------------------------------------------------------------------- conversations (SFT)

def regression_suite(path):
    """[(prompt, expected)] from a JSONL of {"prompt", "expected"}, or the built-in held-out questions when path is
    None or 'builtin'. A response passes when it contains the expected answer (builtin_data.check_answer)."""
    if path in (None, "builtin"):
        return [(it["prompt"], it["answer"]) for it in builtin_data.checkable_prompts(split="heldout")]
    suite = []
    for n, record in iter_raw_records(path):
        if isinstance(record, DataError):
            raise DataError(f"{path}:{n}: {record}")
        for field in ("prompt", "expected"):
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise DataError(f"{path}:{n}: field '{field}' must be a string")
        suite.append((record["prompt"], record["expected"]))
    if not suite:
        raise DataError(f"{path}: no prompts")
    return suite


def assistant_turn_ends(mask):
    """Token positions just after each assistant reply (its <|im_end|>), from the assistant mask: where a
    conversation can be cut and still end on a complete assistant turn."""
    return [i + 1 for i in range(len(mask)) if mask[i] and (i + 1 == len(mask) or not mask[i + 1])]


def tokenize_conversation(messages, tokenizer, max_len):
    """(ids, assistant_mask) of a conversation, at most max_len tokens. Too long: drop trailing turns until it
    fits (whole turns); if even the first exchange is too long, cut inside it. None when no assistant token
    survives (the caller drops and counts the sample)."""
    ids, mask = tokenizer.apply_chat_template(messages)
    if len(ids) > max_len:
        fitting = [end for end in assistant_turn_ends(mask) if end <= max_len]
        cut = fitting[-1] if fitting else max_len
        ids, mask = ids[:cut], mask[:cut]
    return (ids, mask) if any(mask) else None


class SFTDataset:
    """Tokenized conversations: (ids, assistant_mask) per sample, cut to seq_len + 1 tokens (inputs and targets
    are that sequence shifted by one). `system_prompt` is added, with probability `system_prompt_prob` per
    conversation (seeded), to conversations that have no system message."""

    def __init__(self, conversations, tokenizer, seq_len, system_prompt=None, system_prompt_prob=0.0, seed=0):
        rng = random.Random(seed)
        self.samples, self.dropped, self.truncated, self.with_system_prompt = [], 0, 0, 0
        for messages in conversations:
            if system_prompt and messages[0]["role"] != "system" and rng.random() < system_prompt_prob:
                messages = [{"role": "system", "content": system_prompt}] + messages
                self.with_system_prompt += 1
            full_len = len(tokenizer.apply_chat_template(messages)[0])
            sample = tokenize_conversation(messages, tokenizer, seq_len + 1)
            if sample is None:
                self.dropped += 1  # nothing left to learn from within seq_len
                continue
            self.truncated += len(sample[0]) < full_len
            self.samples.append((np.array(sample[0], dtype=np.int32), np.array(sample[1], dtype=np.int8)))

    def __len__(self):
        return len(self.samples)

    def stats(self):
        return {"samples": len(self.samples), "dropped_no_assistant_token": self.dropped,
                "truncated": self.truncated, "with_system_prompt": self.with_system_prompt,
                "tokens": int(sum(len(ids) for ids, _ in self.samples)),
                "assistant_tokens": int(sum(mask.sum() for _, mask in self.samples))}

    def get(self, i, turn_drop_prob=0.0, rng=None):
        """Sample i; with probability turn_drop_prob its trailing turns are dropped (cut after a random earlier
        assistant reply): the model also sees conversations that end mid-way."""
        ids, mask = self.samples[i]
        ends = assistant_turn_ends(mask)
        if turn_drop_prob > 0 and len(ends) > 1 and rng.random() < turn_drop_prob:
            cut = rng.choice(ends[:-1])
            ids, mask = ids[:cut], mask[:cut]
        return ids, mask


def sft_batch(dataset, indices, pad_id, turn_drop_prob=0.0, seed=0, position=0):
    """(x, y, loss_mask), each (B, T) with T the longest sample in the batch minus one. y is x shifted by one,
    loss_mask[t] = 1 where y[t] is an assistant token: the mask is shifted with the targets (the off-by-one
    MiniMind users keep reporting). Padding carries no loss. Augmentation is seeded by the sample position, so
    resumed runs see the same batches."""
    rng = random.Random(seed * 1_000_003 + position)
    samples = [dataset.get(i, turn_drop_prob, rng) for i in indices]
    T = max(len(ids) for ids, _ in samples) - 1
    x = torch.full((len(samples), T), pad_id, dtype=torch.long)
    y = torch.full((len(samples), T), pad_id, dtype=torch.long)
    loss_mask = torch.zeros((len(samples), T), dtype=torch.long)
    for row, (ids, mask) in enumerate(samples):
        n = len(ids) - 1
        x[row, :n] = torch.from_numpy(ids[:-1].astype(np.int64))
        y[row, :n] = torch.from_numpy(ids[1:].astype(np.int64))
        loss_mask[row, :n] = torch.from_numpy(mask[1:].astype(np.int64))
    return x, y, loss_mask


# ----------------------------------------------------------------------------- preference pairs (DPO, reward model)

def tokenize_pair(pair, tokenizer, max_len, max_prompt_len=None):
    """(prompt_ids, chosen_ids, rejected_ids). The prompt is rendered with the chat template up to the assistant
    header; each response is its content and <|im_end|>, exactly as the template renders an assistant turn.
    Too long: keep the end of the prompt (the latest turn, at most max_prompt_len, default max_len // 2), then
    cut the responses to what is left."""
    prompt = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True)[0]
    chosen = tokenizer.encode(pair["chosen"]) + [tokenizer.eos_id]
    rejected = tokenizer.encode(pair["rejected"]) + [tokenizer.eos_id]
    if len(prompt) + max(len(chosen), len(rejected)) > max_len:
        prompt = prompt[-(max_prompt_len or max_len // 2):]
        chosen, rejected = chosen[:max_len - len(prompt)], rejected[:max_len - len(prompt)]
    return prompt, chosen, rejected


class PairDataset:
    """Tokenized preference pairs, each at most seq_len + 1 tokens (prompt + response)."""

    def __init__(self, pairs, tokenizer, seq_len, max_prompt_len=None):
        self.samples, self.truncated = [], 0
        for pair in pairs:
            prompt, chosen, rejected = tokenize_pair(pair, tokenizer, seq_len + 1, max_prompt_len)
            self.truncated += chosen[-1] != tokenizer.eos_id or rejected[-1] != tokenizer.eos_id
            self.samples.append((prompt, chosen, rejected))

    def __len__(self):
        return len(self.samples)

    def stats(self):
        return {"pairs": len(self.samples), "truncated": int(self.truncated),
                "tokens": int(sum(len(p) * 2 + len(c) + len(r) for p, c, r in self.samples))}


def pad_sequences(sequences, pad_id):
    """Right-pad id lists into (B, L) and return (ids, lengths)."""
    L = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), L), pad_id, dtype=torch.long)
    for row, s in enumerate(sequences):
        ids[row, :len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, torch.tensor([len(s) for s in sequences])


def pair_batch(dataset, indices, pad_id):
    """Chosen and rejected in one batch (one forward pass): rows 0..B-1 are prompt+chosen, rows B..2B-1 are
    prompt+rejected. Returns (ids (2B, L), lengths (2B,), prompt_lengths (2B,))."""
    samples = [dataset.samples[i] for i in indices]
    sequences = [p + c for p, c, _ in samples] + [p + r for p, _, r in samples]
    ids, lengths = pad_sequences(sequences, pad_id)
    prompt_lengths = torch.tensor([len(p) for p, _, _ in samples] * 2)
    return ids, lengths, prompt_lengths


def response_targets(ids, lengths, prompt_lengths, by_model=None):
    """Shift for next-token prediction and mark the response: x = ids[:, :-1], y = ids[:, 1:], and
    response_mask[b, t] = 1 where y[b, t] is a response token (not the prompt, not padding). by_model: per row, 1/0
    for each response token (0: a tool's reply fed in during the rollout, which is not the model's to learn)."""
    position = torch.arange(1, ids.size(1), device=ids.device)[None, :]  # where y[:, t] sits in ids
    response_mask = (position >= prompt_lengths[:, None].to(ids.device)) & (position < lengths[:, None].to(ids.device))
    if by_model is not None:
        own = torch.ones_like(ids, dtype=torch.bool)
        for b, flags in enumerate(by_model):
            start = int(prompt_lengths[b])
            own[b, start:start + len(flags)] = torch.tensor(flags, dtype=torch.bool, device=ids.device)
        response_mask &= own[:, 1:]
    return ids[:, :-1], ids[:, 1:], response_mask.float()


def rollout_sequences(prompt_ids, response_ids, eos_id, pad_id, cut=True):
    """Prompt + generated tokens cut after the first <|im_end|> (cut=False: as they are; a tool rollout holds several
    turns), right-padded: (ids, lengths, prompt_lengths, the responses). response_targets(ids, lengths,
    prompt_lengths) then marks exactly the generated tokens."""
    responses = [r[:r.index(eos_id) + 1] if cut and eos_id in r else r for r in response_ids]
    responses = [r if r else [eos_id] for r in responses]  # an empty response still ends the turn
    ids, lengths = pad_sequences([p + r for p, r in zip(prompt_ids, responses)], pad_id)
    return ids, lengths, torch.tensor([len(p) for p in prompt_ids]), responses


# ----------------------------------------------------------------------------- what the training scripts read

def load_data(args, kind):
    """load_datasets with the shared data flags (--data, --val-data, --format, sampling, split, bad lines)."""
    return load_datasets(args.data, kind, seed=args.seed, val_split=args.val_split, global_ratio=args.global_sample_ratio,
                         max_records=args.max_data_size, fmt=args.format, skip_bad_lines=args.skip_bad_lines,
                         val_specs=args.val_data)


def data_key(args):
    """A short hash of what decides the text records: the --data files (size, mtime), builtin_data.py when used, and
    the sampling flags. The token cache and pretraining's tokenizer reuse are keyed by it."""
    builtin_source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin_data.py")  # its edits change the data
    return cache_key([*args.data, builtin_source if "builtin" in args.data else "", args.seed, args.val_split,
                      args.global_sample_ratio, args.max_data_size, args.format, args.skip_bad_lines])


def packed_text_data(args, run, tokenizer, loaded=None):
    """(train, val LanguageModelingDataset, val tokens per byte) for next-token training on packed blocks: the text
    is tokenized once into a file under MINIGPT_DATA_DIR (data_cache/) keyed by the data, the flags and the
    tokenizer, and memory-mapped after that. `loaded`: the (train, val, stats) records if already read."""
    cache_dir = env_default("MINIGPT_DATA_DIR", "data_cache", str)
    key = cache_key([data_key(args), *(args.val_data or []), tokenizer.merges, sorted(tokenizer.special_tokens.items())])
    if run.master:
        train_texts, val_texts, stats = loaded or (None, None, None)
        if not os.path.isfile(os.path.join(cache_dir, key, "meta.json")) and train_texts is None:
            train_texts, val_texts, stats = load_data(args, "text")
        cache, meta = build_token_cache(train_texts, val_texts, tokenizer, cache_dir, key, stats)
        write_json(os.path.join(args.out_dir, "dataset_stats.json"),
                   {**meta["stats"], "train": meta["train"], "val": meta["val"], "cache": cache})
    if run.ddp:
        torch.distributed.barrier()
    cache, meta = build_token_cache(None, None, tokenizer, cache_dir, key)  # now only reads meta.json
    train_ds = LanguageModelingDataset(os.path.join(cache, "train.bin"), meta["dtype"], args.seq_len, tokenizer.bos_id)
    val_ds = LanguageModelingDataset(os.path.join(cache, "val.bin"), meta["dtype"], args.seq_len, tokenizer.bos_id) \
        if meta["val"]["tokens"] > args.seq_len else train_ds
    # bits per byte = loss in nats / ln 2 * (tokens that carry loss / bytes of text): comparable across tokenizers
    split = meta["val"] if val_ds is not train_ds else meta["train"]
    if val_ds is train_ds and run.master:
        print("warning: validation split is smaller than one block; evaluating on training data")
    if run.master:
        print(f"data: {meta['train']['tokens']:,} train tokens ({len(train_ds):,} blocks of {args.seq_len}), "
              f"{meta['val']['tokens']:,} val tokens; vocab {tokenizer.vocab_size}")
    return train_ds, val_ds, (split["tokens"] - split["documents"]) / max(1, split["bytes"])
