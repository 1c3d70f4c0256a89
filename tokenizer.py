"""
Byte-level BPE tokenizer: train it, encode/decode, render chat conversations, save as Hugging Face tokenizer.json.

How BPE works, in three lines:
  1. Text is split into chunks (words, numbers, punctuation runs, whitespace) by a regex, and each chunk into UTF-8 bytes.
  2. Training repeatedly finds the most frequent adjacent pair of tokens and merges it into a new token.
  3. Encoding replays those merges, lowest rank (earliest learned) first, inside each chunk.

Ids: special tokens first (<|endoftext|>=0 pad, <|im_start|>=1 bos, <|im_end|>=2 eos, then any extras),
then the 256 bytes, then one id per merge. This is MiniMind's ChatML layout.

Unlike minbpe we do not recount every pair after every merge: pair counts are kept up to date incrementally,
touching only the words that contain the merged pair (an index from pair to words finds them).
"""
import argparse
import functools
import heapq
import json
import multiprocessing as mp
import os
import random
import re
import sys
import unicodedata
from collections import Counter, defaultdict

from tqdm import tqdm

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>",  # pad/unk, bos, eos: fixed ids 0, 1, 2
                  "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]  # 3-8
CHAT_ROLES = ("system", "user", "assistant", "tool")


def _char_class(pred):
    """A regex character class body for every code point where pred(ch) holds, as ranges."""
    out, start = [], None
    for cp in range(sys.maxunicode + 2):
        if cp <= sys.maxunicode and pred(chr(cp)):
            start = cp if start is None else start
        elif start is not None:
            a, b = re.escape(chr(start)), re.escape(chr(cp - 1))
            out.append(a if start == cp - 1 else f"{a}-{b}")
            start = None
    return "".join(out)


# Split patterns, written as Hugging Face writes them (Oniguruma syntax). GPT2_PATTERN is GPT-2's, which HF's ByteLevel
# pre-tokenizer uses (the default); DIGITS_PATTERN differs in one place: each digit is its own chunk, as in Llama and
# Qwen, so "478" is always the tokens 4 7 8 and a small model can copy and add numbers digit by digit (with
# " ?\p{N}+" BPE learns " 47" and "8" and a digit has many spellings). The arithmetic chains need it; on the built-in
# data it cost SFT's held-out accuracy 0.386 -> 0.150 (seed 1337, sums and facts alike), so it is a choice:
# train(pattern=DIGITS_PATTERN), tokenizer.py train --digits split, train_pretrain.py --tokenizer-digits split.
GPT2_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
DIGITS_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Python's `re` has no \p{L}/\p{N}, so we build those classes from unicodedata once (~0.1 s); the splits are
# identical to the `regex` module's.
_L = _char_class(str.isalpha)                                   # \p{L}: categories Lu Ll Lt Lm Lo
_N = _char_class(lambda c: unicodedata.category(c)[0] == "N")   # \p{N}: Nd Nl No


@functools.lru_cache(maxsize=None)
def compile_pattern(pattern):
    r"""An Oniguruma split pattern as a Python regex: \p{L} and \p{N} become our character classes (bare inside
    [...], bracketed outside)."""
    out, in_class, i = [], False, 0
    while i < len(pattern):
        part = pattern[i:i + 5]
        if part in (r"\p{L}", r"\p{N}"):
            body = _L if part == r"\p{L}" else _N
            out.append(body if in_class else f"[{body}]")
            i += 5
            continue
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        in_class = (in_class or c == "[") and c != "]"
        out.append(c)
        i += 1
    return re.compile("".join(out))


SPLIT_PATTERN = compile_pattern(GPT2_PATTERN)  # what new tokenizers split with unless told otherwise
PATTERNS = {"group": GPT2_PATTERN, "split": DIGITS_PATTERN}  # --digits / --tokenizer-digits


def bytes_to_unicode():
    """GPT-2's reversible map from the 256 bytes to printable characters; tokenizer.json stores tokens this way."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def _clean(text):
    """Lone surrogates cannot be UTF-8 encoded: replace them with U+FFFD so every str round-trips."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _cjk_token_ok(data, max_chars):
    """Whether a token of these bytes respects max_cjk_chars: it falls on character boundaries (valid UTF-8, or a
    piece of one character: a lead byte and continuation bytes, or continuation bytes only) and spells at most
    max_chars CJK ideographs or kana."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        continuation = [0x80 <= b < 0xC0 for b in data]
        return all(continuation) or (data[0] >= 0xC0 and all(continuation[1:]))  # a piece of one character
    n = sum(1 for ch in text if "\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"
            or ch >= "\U00020000")
    return n <= max_chars


def merge(ids, pair, new_id):
    """Replace every non-overlapping occurrence of `pair` in `ids`, left to right, with new_id.
    Example: merge([1, 2, 3, 1, 2], (1, 2), 4) -> [4, 3, 4]"""
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_with_deltas(ids, pair, new_id):
    """merge(), also returning how the word's pair counts change: [(pair, +1 or -1), ...].

    Only neighbours of a merged position change: for x a b y -> x X y we lose (x, a) and (b, y) and gain (x, X)
    and (X, y). Using the already-merged left neighbour makes runs like a b a b -> X X come out right.
    Example: merge_with_deltas([5, 1, 2, 3], (1, 2), 4) -> ([5, 4, 3], [((5, 1), -1), ((5, 4), 1), ((2, 3), -1), ((4, 3), 1)])
    """
    a, b = pair
    out, deltas, i, n = [], [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            if out:
                deltas += [((out[-1], a), -1), ((out[-1], new_id), 1)]
            if i + 2 < n:
                deltas += [((b, ids[i + 2]), -1), ((new_id, ids[i + 2]), 1)]
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out, deltas


class BPETokenizer:
    def __init__(self, merges=None, special_tokens=None, byte_ids=None, vocab_bytes=None, ignore_merges=False,
                 pattern=GPT2_PATTERN):
        """merges: list of ((id_a, id_b), new_id) in rank order; pattern: the split pattern (Oniguruma syntax, as
        tokenizer.json stores it). Use train() or load() rather than this directly."""
        self.pattern, self.split = pattern, compile_pattern(pattern)
        self.special_tokens = dict(special_tokens or {t: i for i, t in enumerate(SPECIAL_TOKENS)})  # str -> id
        n_special = len(self.special_tokens)
        self.byte_ids = byte_ids or [n_special + b for b in range(256)]  # byte value -> token id
        self.merges = list(merges or [])
        self.merge_ranks = {pair: (rank, new_id) for rank, (pair, new_id) in enumerate(self.merges)}
        if vocab_bytes is None:  # id -> bytes, built from bytes and merges
            vocab_bytes = {i: bytes([b]) for b, i in enumerate(self.byte_ids)}
            for (a, b), new_id in self.merges:
                vocab_bytes[new_id] = vocab_bytes[a] + vocab_bytes[b]
        self.vocab_bytes = vocab_bytes
        for tok, i in self.special_tokens.items():
            self.vocab_bytes[i] = tok.encode("utf-8")
        self.bytes_to_id = {b: i for i, b in self.vocab_bytes.items() if i not in self.special_tokens.values()}
        self.ignore_merges = ignore_merges  # HF option: a chunk that is itself a token is emitted whole
        self.id_to_special = {i: t for t, i in self.special_tokens.items()}
        self._special_pattern = re.compile("(" + "|".join(re.escape(t) for t in sorted(self.special_tokens, key=len, reverse=True)) + ")")
        self.cache = {}  # chunk -> ids, so repeated words are merged once

    # ------------------------------------------------------------------ basic properties
    @property
    def vocab_size(self):
        return max(self.vocab_bytes) + 1

    def token_to_id(self, token):
        if token in self.special_tokens:
            return self.special_tokens[token]
        return self.bytes_to_id.get(token.encode("utf-8"))

    def id_to_token(self, i):
        return self.id_to_special.get(i) or self.vocab_bytes[i].decode("utf-8", errors="replace")

    pad_id = property(lambda self: self.special_tokens["<|endoftext|>"])
    bos_id = property(lambda self: self.special_tokens["<|im_start|>"])
    eos_id = property(lambda self: self.special_tokens["<|im_end|>"])

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, texts, vocab_size, special_tokens=None, max_samples=None, seed=0, min_frequency=2, verbose=True,
              max_cjk_chars=None, pattern=GPT2_PATTERN):
        """Learn merges from an iterable of strings until the vocabulary has vocab_size tokens.

        max_samples: train on a seeded random sample of that many texts (reservoir sampling, so an iterator
        over a corpus larger than memory works). Ties between equally frequent pairs go to the smallest ids,
        so the same input always gives the same merges.
        max_cjk_chars: no token spans more Chinese/Japanese characters than this. The split pattern keeps a whole
        CJK clause in one chunk (no spaces), so on a small repetitive corpus BPE merges whole sentences into one
        token that cannot be reused; None (as Hugging Face's trainer) sets no limit. Encoding is unaffected.
        """
        specials = SPECIAL_TOKENS + [t for t in (special_tokens or []) if t not in SPECIAL_TOKENS]
        if vocab_size < 256 + len(specials):
            raise ValueError(f"vocab_size {vocab_size} is smaller than 256 bytes + {len(specials)} special tokens")
        if max_samples is not None:
            texts = _reservoir_sample(texts, max_samples, seed)
        split = compile_pattern(pattern)
        # 1. count chunks ("words"); each distinct chunk is processed once, weighted by its count
        chunk_counts = Counter()
        for text in texts:
            chunk_counts.update(split.findall(_clean(text)))
        if not chunk_counts:
            raise ValueError("cannot train a tokenizer on an empty corpus")
        n_special = len(specials)
        words = [[n_special + b for b in chunk.encode("utf-8")] for chunk in chunk_counts]
        freqs = list(chunk_counts.values())
        # 2. count every adjacent pair once, remembering which words contain it
        pair_counts, pair_words = defaultdict(int), defaultdict(set)
        for w, (ids, f) in enumerate(zip(words, freqs)):
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] += f
                pair_words[pair].add(w)
        heap = [(-c, pair) for pair, c in pair_counts.items()]  # max-heap by count; stale entries skipped on pop
        heapq.heapify(heap)
        vocab_bytes = {n_special + b: bytes([b]) for b in range(256)}
        bytes_to_id = {v: k for k, v in vocab_bytes.items()}
        merges = []
        n_new = vocab_size - n_special - 256
        banned = set()  # pairs whose merge would exceed max_cjk_chars
        bar = tqdm(total=n_new, desc="bpe merges", disable=not verbose, unit="merge")
        while len(vocab_bytes) < vocab_size - n_special and heap:
            neg_count, pair = heapq.heappop(heap)
            if -neg_count != pair_counts.get(pair, 0) or pair in banned:
                continue  # stale entry (the count changed after it was pushed), or a merge we never make
            if -neg_count < min_frequency:
                break
            # 3. the new token; two merge paths can spell the same bytes, and then share one id (as in HF)
            new_bytes = vocab_bytes[pair[0]] + vocab_bytes[pair[1]]
            if max_cjk_chars is not None and not _cjk_token_ok(new_bytes, max_cjk_chars):
                banned.add(pair)
                continue
            new_id = bytes_to_id.get(new_bytes)
            if new_id is None:
                new_id = n_special + len(vocab_bytes)
                vocab_bytes[new_id] = new_bytes
                bytes_to_id[new_bytes] = new_id
                bar.update(1)
            merges.append((pair, new_id))
            # 4. re-count only around each merged position of the words that contain the pair
            changed = set()
            for w in pair_words.pop(pair):
                new_ids, deltas = merge_with_deltas(words[w], pair, new_id)
                if not deltas and len(new_ids) == len(words[w]):
                    continue  # the index is lazy: this word no longer holds the pair
                f = freqs[w]
                for p, sign in deltas:
                    pair_counts[p] += sign * f
                    changed.add(p)
                    if sign > 0:
                        pair_words[p].add(w)
                words[w] = new_ids
            pair_counts.pop(pair, None)
            for p in changed:
                c = pair_counts.get(p, 0)
                if c > 0:
                    heapq.heappush(heap, (-c, p))
                else:
                    pair_counts.pop(p, None)
        bar.close()
        return cls(merges, special_tokens={t: i for i, t in enumerate(specials)}, pattern=pattern)

    # ------------------------------------------------------------------ encoding
    def _encode_chunk(self, chunk):
        ids = self.cache.get(chunk)
        if ids is not None:
            return ids
        data = chunk.encode("utf-8")
        whole = self.bytes_to_id.get(data) if self.ignore_merges else None
        if whole is not None:
            ids = [whole]
        else:
            ids = [self.byte_ids[b] for b in data]
            ranks = self.merge_ranks
            while len(ids) >= 2:
                # the adjacent pair learned earliest is merged first, exactly as training created it
                pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, (1 << 62,))[0])
                if pair not in ranks:
                    break
                ids = merge(ids, pair, ranks[pair][1])
        if len(self.cache) < 500_000:
            self.cache[chunk] = ids
        return ids

    def encode(self, text, add_special_tokens=False, allow_special=False):
        """Text to ids. add_special_tokens wraps the ids in <|im_start|> ... <|im_end|> (a pretraining document).
        Special-token strings inside text are plain text unless allow_special=True, so input cannot inject them."""
        text = _clean(text)
        ids = [self.bos_id] if add_special_tokens else []
        parts = self._special_pattern.split(text) if allow_special else [text]
        for part in parts:
            if part in self.special_tokens and allow_special:
                ids.append(self.special_tokens[part])
                continue
            for chunk in self.split.findall(part):
                ids.extend(self._encode_chunk(chunk))
        if add_special_tokens:
            ids.append(self.eos_id)
        return ids

    def encode_batch(self, texts, add_special_tokens=False, num_workers=None):
        """Encode many texts; above ~1 MB in total the work is spread over all cores."""
        texts = list(texts)
        if sum(len(t) for t in texts) < 1_000_000:
            return [self.encode(t, add_special_tokens) for t in texts]
        size = max(1, len(texts) // (4 * (num_workers or os.cpu_count() or 1)))
        batches = (texts[i:i + size] for i in range(0, len(texts), size))
        return [ids for batch in self.encode_stream(batches, add_special_tokens, num_workers) for ids in batch]

    def encode_stream(self, batches, add_special_tokens=False, num_workers=None):
        """Yield the encodings of each batch (a list of texts) in order, encoding batches in a fork-based
        process pool, so a large corpus streams through both cores without being held in memory at once."""
        num_workers = num_workers or os.cpu_count() or 1
        if num_workers == 1 or "fork" not in mp.get_all_start_methods():
            yield from ([self.encode(t, add_special_tokens) for t in batch] for batch in batches)
            return
        global _WORKER_TOKENIZER
        _WORKER_TOKENIZER = self  # forked workers inherit it; nothing large is pickled on the way in
        with mp.get_context("fork").Pool(num_workers) as pool:
            yield from pool.imap(_encode_worker, ((batch, add_special_tokens) for batch in batches))

    def decode(self, ids, skip_special_tokens=False):
        special = self.id_to_special
        data = b"".join(b"" if (skip_special_tokens and i in special) else self.vocab_bytes[i] for i in ids)
        return data.decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ chat
    def chat_pieces(self, messages, add_generation_prompt=False, tools=None, enable_thinking=True):
        """The chat template as [(text or special token, in the loss)] pieces; apply_chat_template encodes them.

            <|im_start|>system\n{content}\n\nTools:\n{name}({parameters}): {description}<|im_end|>\n   a line per tool
            <|im_start|>user\n{content}<|im_end|>\n
            <|im_start|>assistant\n<think>\n{reasoning_content}\n</think>\n\n{content}
                <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call><|im_end|>\n   (each part only when present)
            <|im_start|>tool\n<tool_response>\n{content}\n</tool_response><|im_end|>\n
        In the loss: each assistant message's reasoning, content, tool calls and closing <|im_end|> (what the model must
        write, including when to stop); never headers, system, user or tool turns (a tool's output is not the model's
        to predict). tools may also sit in a first system message as a "tools" key (how data.py carries them).
        enable_thinking=False ends the generation prompt with an empty <think>\\n\\n</think>: the model answers at once.
        A tool is one line, not its JSON schema: a tiny model's context is 256 tokens, and the schema alone took 290."""
        messages = list(messages)
        if messages and messages[0].get("role") == "system" and messages[0].get("tools"):
            tools = tools or messages[0]["tools"]
        if tools and (not messages or messages[0].get("role") != "system"):
            messages = [{"role": "system", "content": ""}] + messages
        bos, eos = self.bos_id, self.eos_id
        pieces = []
        for i, msg in enumerate(messages):
            role, content = msg.get("role"), msg.get("content")
            calls = msg.get("tool_calls") or []
            reasoning = msg.get("reasoning_content")
            if role not in CHAT_ROLES or not (isinstance(content, str) or (content is None and role == "assistant")):
                raise ValueError(f"message {i}: expected role in {CHAT_ROLES} and string content, got role={role!r}")
            if (calls or reasoning is not None) and role != "assistant":
                raise ValueError(f"message {i}: only assistant messages have tool_calls or reasoning_content")
            if reasoning is not None and not isinstance(reasoning, str):
                raise ValueError(f"message {i}: reasoning_content must be a string")
            content = content or ""
            if role == "system" and i == 0 and tools:
                content = (content + "\n\n" if content else "") + "Tools:" + "".join("\n" + _tool_line(t) for t in tools)
            pieces += [(bos, 0), (role + "\n", 0)]
            if role == "assistant":
                body = []
                if reasoning is not None:
                    body += [(self._special("<think>"), 1), ("\n" + reasoning + "\n", 1), (self._special("</think>"), 1)]
                text = ("\n\n" if reasoning is not None else "") + content
                for j, call in enumerate(calls):
                    name, arguments = _call_parts(call, i)
                    text += "\n" if (j == 0 and content) or j > 0 else ""
                    body += [(text, 1), (self._special("<tool_call>"), 1),
                             ('\n{"name": "' + name + '", "arguments": ' + arguments + "}\n", 1),
                             (self._special("</tool_call>"), 1)]
                    text = ""
                pieces += body + [(text, 1), (eos, 1), ("\n", 0)]
            elif role == "tool":
                pieces += [(self._special("<tool_response>"), 0), ("\n" + content + "\n", 0),
                           (self._special("</tool_response>"), 0), (eos, 0), ("\n", 0)]
            else:
                pieces += [(content, 0), (eos, 0), ("\n", 0)]
        if add_generation_prompt:
            pieces += [(bos, 0), ("assistant\n", 0)]
            if not enable_thinking:
                # ends at </think>: the model writes the blank line and its answer as one piece, as in training
                pieces += [(self._special("<think>"), 0), ("\n\n", 0), (self._special("</think>"), 0)]
        return pieces

    def apply_chat_template(self, messages, add_generation_prompt=False, tools=None, enable_thinking=True):
        """Render a conversation (OpenAI-style messages: role, content, and for the assistant reasoning_content and
        tool_calls) and return (ids, assistant_mask); the one place the SFT loss mask is defined (chat_pieces says
        what is in it). Each text between two special tokens is encoded as one piece, as Hugging Face encodes the
        rendered string, so the exported Jinja template gives the same ids; a role header is encoded apart from the
        content after it, so the mask boundary is exact."""
        ids, mask = [], []
        for piece, in_loss in self.chat_pieces(messages, add_generation_prompt, tools, enable_thinking):
            piece_ids = [piece] if isinstance(piece, int) else self.encode(piece)
            ids += piece_ids
            mask += [in_loss] * len(piece_ids)
        return ids, mask

    def _special(self, token):
        if token not in self.special_tokens:
            raise ValueError(f"this tokenizer has no {token} token (a tokenizer.json from before reasoning and tools): "
                             f"train a new one (tokenizer.py train, or train_pretrain.py) to use them")
        return self.special_tokens[token]

    # The same template in Jinja, for the exported tokenizer_config.json (transformers, vLLM, llama.cpp); a test checks
    # that transformers' apply_chat_template(..., tools=...) gives our ids. transformers' tojson is json.dumps with
    # ensure_ascii=False, as chat_pieces writes arguments given as an object.
    CHAT_TEMPLATE_JINJA = (
        "{%- if tools -%}"
        "{{- '<|im_start|>system\\n' -}}"
        "{%- if messages and messages[0]['role'] == 'system' and messages[0]['content'] -%}"
        "{{- messages[0]['content'] + '\\n\\n' -}}{%- endif -%}"
        "{{- 'Tools:' -}}{%- for tool in tools -%}"
        "{%- set fn = tool['function'] if tool['function'] is defined else tool -%}{{- '\\n' + fn['name'] + '(' -}}"
        "{%- if fn['parameters'] is defined and fn['parameters']['properties'] is defined -%}"
        "{{- fn['parameters']['properties'] | list | join(', ') -}}{%- endif -%}{{- ')' -}}"
        "{%- if fn['description'] is defined and fn['description'] -%}{{- ': ' + fn['description'] -}}{%- endif -%}"
        "{%- endfor -%}"
        "{{- '<|im_end|>\\n' -}}{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' and loop.first and tools -%}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{- '<|im_start|>assistant\\n' -}}"
        "{%- if message['reasoning_content'] is defined and message['reasoning_content'] is string -%}"
        "{{- '<think>\\n' + message['reasoning_content'] + '\\n</think>\\n\\n' -}}{%- endif -%}"
        "{%- set content = message['content'] if message['content'] is string else '' -%}{{- content -}}"
        "{%- if message['tool_calls'] is defined and message['tool_calls'] -%}"
        "{%- for tool_call in message['tool_calls'] -%}"
        "{%- if (loop.first and content) or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
        "{%- if tool_call['function'] is defined -%}{%- set tool_call = tool_call['function'] -%}{%- endif -%}"
        "{{- '<tool_call>\\n{\"name\": \"' + tool_call['name'] + '\", \"arguments\": ' -}}"
        "{%- if tool_call['arguments'] is string -%}{{- tool_call['arguments'] -}}"
        "{%- else -%}{{- tool_call['arguments'] | tojson -}}{%- endif -%}"
        "{{- '}\\n</tool_call>' -}}{%- endfor -%}{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- elif message['role'] == 'tool' -%}"
        "{{- '<|im_start|>tool\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' -}}"
        "{%- else -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
        "{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
        "{%- if enable_thinking is defined and not enable_thinking -%}{{- '<think>\\n\\n</think>' -}}{%- endif -%}"
        "{%- endif -%}")

    # ------------------------------------------------------------------ Hugging Face tokenizer.json
    def to_hf_dict(self, add_bos=False):
        """tokenizer.json as Hugging Face's `tokenizers` writes it. add_bos: a post-processor puts <|im_start|> before
        every encoded text (export_hf.py sets it), since every training document began with it: then transformers,
        vLLM and llama.cpp continue a plain prompt exactly as generate.py does. Chat templates render their own
        <|im_start|> and are encoded without special tokens, so they get no second one."""
        tok = lambda i: "".join(BYTE_TO_CHAR[b] for b in self.vocab_bytes[i])
        vocab = {t: i for t, i in self.special_tokens.items()}
        vocab.update({tok(i): i for i in sorted(self.vocab_bytes) if i not in self.id_to_special})
        added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for t, i in sorted(self.special_tokens.items(), key=lambda x: x[1])]
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        pre_tokenizer = byte_level  # GPT-2's split is built into ByteLevel; any other is a Split before it
        if self.pattern != GPT2_PATTERN:
            pre_tokenizer = {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern}, "behavior": "Isolated", "invert": False},
                {**byte_level, "use_regex": False}]}
        post_processor = None
        if add_bos:
            bos, text = {"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}
            post_processor = {"type": "TemplateProcessing", "single": [bos, text],
                              "pair": [bos, text, {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [self.bos_id],
                                                                  "tokens": ["<|im_start|>"]}}}
        return {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": pre_tokenizer, "post_processor": post_processor, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": self.ignore_merges, "vocab": vocab,
                      "merges": [f"{tok(a)} {tok(b)}" for (a, b), _ in self.merges]},
        }

    def save(self, path, add_bos=False):
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_hf_dict(add_bos), f, ensure_ascii=False, indent=1)
        os.replace(tmp, path)  # atomic: a crash never leaves half a tokenizer.json

    @classmethod
    def load(cls, path):
        """Load a Hugging Face tokenizer.json with a byte-level BPE model (ours, MiniMind's, GPT-2 style)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: tokenizer file not found")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        try:
            model = data["model"]
            if model.get("type", "BPE") != "BPE":
                raise ValueError(f"model.type is {model.get('type')!r}, expected 'BPE'")
            pre = data.get("pre_tokenizer") or {}
            pres = pre.get("pretokenizers", [pre])
            pre_types = [p.get("type") for p in pres]
            if pre_types == ["ByteLevel"] and pres[0].get("use_regex", True):
                pattern = GPT2_PATTERN
            elif (pre_types == ["Split", "ByteLevel"] and not pres[1].get("use_regex", True)
                  and isinstance(pres[0].get("pattern", {}).get("Regex"), str) and pres[0].get("behavior") == "Isolated"
                  and not pres[0].get("invert")):
                pattern = pres[0]["pattern"]["Regex"]
            else:
                raise ValueError(f"pre_tokenizer is {pre_types}, expected ByteLevel, or Split (a regex, isolated) then "
                                 f"ByteLevel without its regex")
            vocab = model["vocab"]
            if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
                raise ValueError("model.vocab should be an object mapping each token to its integer id")
            special = {t["content"]: t["id"] for t in data.get("added_tokens", []) if t.get("special", True)}
            to_bytes = lambda s: bytes(CHAR_TO_BYTE[c] for c in s)
            missing = [b for b in range(256) if BYTE_TO_CHAR[b] not in vocab]
            if missing:
                raise ValueError(f"model.vocab lacks byte tokens for {len(missing)} bytes (e.g. 0x{missing[0]:02x})")
            byte_ids = [vocab[BYTE_TO_CHAR[b]] for b in range(256)]
            vocab_bytes = {i: to_bytes(t) for t, i in vocab.items() if t not in special}
            merges = []
            if not isinstance(model["merges"], list):
                raise ValueError(f"model.merges is {type(model['merges']).__name__}, expected a list")
            for rank, m in enumerate(model["merges"]):
                pair = m.split(" ") if isinstance(m, str) else m
                if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(t, str) for t in pair):
                    raise ValueError(f"merge {rank} is {m!r}, expected \"a b\" or [\"a\", \"b\"]")
                a, b = pair
                if a not in vocab or b not in vocab or a + b not in vocab:
                    raise ValueError(f"merge {rank} ({a!r} {b!r}) names a token missing from model.vocab")
                merges.append(((vocab[a], vocab[b]), vocab[a + b]))
        except KeyError as e:
            raise ValueError(f"{path}: not a byte-level BPE tokenizer.json (no field {e})") from None
        except (TypeError, AttributeError) as e:
            raise ValueError(f"{path}: not a byte-level BPE tokenizer.json (malformed: {e})") from None
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        for t in SPECIAL_TOKENS:  # a vocab that lists our specials without marking them as added tokens
            if t in vocab and t not in special:
                special[t] = vocab[t]
        return cls(merges, special_tokens=special, byte_ids=byte_ids, vocab_bytes=vocab_bytes,
                   ignore_merges=bool(model.get("ignore_merges", False)), pattern=pattern)


def _tool_line(tool):
    """An OpenAI tool as the system turn lists it: name(parameter names): description."""
    fn = tool.get("function", tool)
    params = (fn.get("parameters") or {}).get("properties") or {}
    return f"{fn['name']}({', '.join(params)})" + (f": {fn['description']}" if fn.get("description") else "")


def _call_parts(call, i):
    """(name, arguments as JSON text) of an OpenAI tool call {"type": "function", "function": {"name", "arguments"}}
    (or the bare {"name", "arguments"}); arguments may be a JSON string, as OpenAI sends them, or an object."""
    fn = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ValueError(f"message {i}: each tool_calls entry needs function.name (a string)")
    arguments = fn.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return fn["name"], arguments


_WORKER_TOKENIZER = None


def _encode_worker(args):
    texts, add_special_tokens = args
    return [_WORKER_TOKENIZER.encode(t, add_special_tokens) for t in texts]


def _reservoir_sample(texts, k, seed):
    rng, sample = random.Random(seed), []
    for i, t in enumerate(texts):
        if i < k:
            sample.append(t)
        else:
            j = rng.randint(0, i)
            if j < k:
                sample[j] = t
    return sample


def read_text_files(paths):
    """Texts for tokenizer training: each file split into paragraphs (blank-line separated)."""
    from data import read_text  # as the training scripts read: bytes that are not UTF-8 are an error naming file:line
    for path in paths:
        yield from (p for p in re.split(r"\n\s*\n", read_text(path)) if p.strip())


def main(argv=None):
    p = argparse.ArgumentParser(description="Train or inspect a byte-level BPE tokenizer (HF tokenizer.json format).")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a tokenizer on text files")
    t.add_argument("--input", nargs="+", required=True, help="plain text files")
    t.add_argument("--vocab-size", type=int, default=6400)
    t.add_argument("--max-samples", type=int, default=None, help="train on a random sample of this many paragraphs")
    t.add_argument("--max-cjk-chars", type=int, default=None, help="longest Chinese/Japanese run one token may spell")
    t.add_argument("--digits", default="group", choices=sorted(PATTERNS), help="split: one token per digit")
    t.add_argument("--out", required=True, help="where to write tokenizer.json")
    s = sub.add_parser("stats", help="bytes per token and a round-trip check of a tokenizer on a file")
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--input", required=True)
    args = p.parse_args(argv)
    if args.cmd == "train":
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)  # before training, not after
        tok = BPETokenizer.train(read_text_files(args.input), args.vocab_size, max_samples=args.max_samples,
                                 max_cjk_chars=args.max_cjk_chars,
                                 pattern=PATTERNS[args.digits])
        tok.save(args.out)
        print(f"saved {args.out}: {tok.vocab_size} tokens, {len(tok.merges)} merges")
    else:
        from data import read_text
        tok = BPETokenizer.load(args.tokenizer)
        text = read_text(args.input)
        ids = tok.encode(text)
        n_bytes = len(text.encode("utf-8"))
        ok = tok.decode(ids) == text
        print(f"{args.input}: {n_bytes} bytes, {len(ids)} tokens, {n_bytes / max(1, len(ids)):.3f} bytes/token, "
              f"vocab {tok.vocab_size}, round trip {'ok' if ok else 'FAILED'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    from common import cli  # bad input ends in one line naming the file; imported here: this module stays free of torch
    sys.exit(cli(main))
