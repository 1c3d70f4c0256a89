"""
Evaluate any checkpoint on perplexity, bits per byte and seven standard zero-shot tasks, scored the way
EleutherAI's lm-evaluation-harness scores them, from local files in their public formats.

    python eval_benchmarks.py --checkpoint checkpoints/pretrain_tiny --data-dir data/eval
    python eval_benchmarks.py --checkpoint checkpoints/sft_tiny --tasks hellaswag arc_easy --limit 100
    python eval_benchmarks.py --hf hf_export/ --data-dir data/eval      # a Hugging Face folder (transformers needed)

How each task is scored (lm-evaluation-harness, zero-shot):
- multiple choice (hellaswag, arc_easy, arc_challenge, piqa, boolq): the log-likelihood of each answer given the
  context; acc picks the highest sum, acc_norm the highest sum divided by the answer's length in characters.
- winogrande: "partial evaluation": each option is put in the blank and the shared rest of the sentence is scored.
- lambada: the log-likelihood of the last word; acc = the last word is the greedy continuation, perplexity = exp(-mean).
- wikitext2: every token of each article scored once with as much left context as fits (rolling windows);
  word_perplexity, byte_perplexity and bits_per_byte over the original article's words and bytes.
Nothing is downloaded unless --download is given: every task reads a file in --data-dir (names below, in TASKS); any other .jsonl there in
llm-foundry's multiple-choice format (query, choices, gold) is evaluated as a custom task named after the file.
"""
import argparse
import io
import json
import math
import os
import re
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from common import cli, keep_freed_memory, resolve_device, warn_slow_cpu_bf16
from data import DataError, iter_raw_records, pad_sequences, read_text
from model import KVCache, load_model
from tokenizer import BPETokenizer


# ----------------------------------------------------------------------------------------------------------------
# 1. Reading the task files. Each reader returns Items: the (context, continuation) strings to score and the gold answer.

@dataclass
class Item:
    pairs: list                                   # [(context, continuation)], one per choice (one for lambada)
    gold: int = 0                                 # index of the right pair
    choices: list = field(default_factory=list)   # the answer texts, whose lengths acc_norm divides by


def read_jsonl(path):
    """Yield ("file:line", record) for each record (.jsonl, .jsonl.gz or a .json array, read by data.py); a line
    that is not a JSON object stops the run with file:line."""
    for line_no, record in iter_raw_records(path):
        where = f"{path}:{line_no}"
        if isinstance(record, DataError):
            raise DataError(f"{where}: {record}")
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield where, record


def get(record, name, where, kind=str):
    """record[name], checked: a missing field or a value of the wrong type is a one-line error."""
    if name not in record:
        raise DataError(f"{where}: missing field '{name}'")
    value = record[name]
    if kind is list and not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise DataError(f"{where}: field '{name}' should be a non-empty list of strings")
    if kind is not list and not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{where}: field '{name}' should be {expected}, got {type(value).__name__}")
    return value


def label_index(value, n, where, name):
    """A gold label given as an int or a digit string, checked to lie in 0..n-1."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise DataError(f"{where}: field '{name}' is {value!r}, expected an index 0..{n - 1}")
    return value


def multiple_choice(context, choices, gold):
    """The harness's multiple-choice request: each choice is scored as " " + choice after the context."""
    return Item([(context, " " + c) for c in choices], gold, list(choices))


def hellaswag_preprocess(text):
    """The harness's HellaSwag cleanup: WikiHow "[title]" marks become sentence breaks, other [tags] go."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def read_hellaswag(path):
    items = []
    for where, r in read_jsonl(path):
        endings = get(r, "endings", where, list)
        if "ctx_a" in r:  # the original release: the harness capitalises the second part
            ctx = get(r, "ctx_a", where) + " " + get(r, "ctx_b", where).capitalize()
        else:  # ctx = ctx_a + " " + ctx_b: ctx_b is the lower-case fragment after the last ". " (ActivityNet items)
            head, sep, tail = get(r, "ctx", where).rpartition(". ")
            ctx = head + sep + tail.capitalize() if sep and tail[:1].islower() else r["ctx"]
        query = hellaswag_preprocess(get(r, "activity_label", where) + ": " + ctx)
        gold = label_index(get(r, "label", where, (int, str)), len(endings), where, "label")
        items.append(multiple_choice(query, [hellaswag_preprocess(e) for e in endings], gold))
    return items


def read_arc(path):
    """llm-foundry {"query": "Question: ...", "choices", "gold"}; AI2's release {"question": {"stem", "choices":
    [{"text", "label"}]}, "answerKey"}; or Hugging Face's {"question", "choices": {"text", "label"}, "answerKey"}."""
    items = []
    for where, r in read_jsonl(path):
        if "query" in r:
            query, choices = get(r, "query", where), get(r, "choices", where, list)
            gold = label_index(get(r, "gold", where, (int, str)), len(choices), where, "gold")
        else:
            question = get(r, "question", where, (str, dict))
            if isinstance(question, dict):  # AI2: the choices sit inside the question
                stem, options = get(question, "stem", where), get(question, "choices", where, (list,))
                if not all(isinstance(o, dict) and isinstance(o.get("text"), str) for o in options):
                    raise DataError(f"{where}: field 'question.choices' should be a list of {{text, label}} objects")
                choices, labels = [o["text"] for o in options], [o.get("label") for o in options]
            else:
                stem, options = question, get(r, "choices", where, dict)
                choices, labels = options.get("text"), options.get("label")
                if not (isinstance(choices, list) and isinstance(labels, list) and len(choices) == len(labels)):
                    raise DataError(f"{where}: field 'choices' should hold equal lists 'text' and 'label'")
            query = "Question: " + stem
            key = get(r, "answerKey", where)
            if key not in labels:
                raise DataError(f"{where}: field 'answerKey' is {key!r}, not one of {labels}")
            gold = labels.index(key)
        items.append(multiple_choice(query + "\nAnswer:", choices, gold))  # harness: "Question: {q}\nAnswer:"
    return items


def read_custom(path):
    """Any multiple-choice file in llm-foundry's format {"query", "choices", "gold"}: each choice is scored as
    " " + choice after the query (llm-foundry's default continuation delimiter is a space)."""
    items = []
    for where, r in read_jsonl(path):
        query, choices = get(r, "query", where), get(r, "choices", where, list)
        items.append(multiple_choice(query, choices, label_index(get(r, "gold", where, (int, str)), len(choices), where, "gold")))
    return items


def read_boolq(path):
    """llm-foundry {"query": "Passage: ...\\nQuestion: ...?", "choices": ["no", "yes"], "gold"}, or the original
    {"passage", "question", "answer": bool}. The harness's context is "{passage}\\nQuestion: {question}?\\nAnswer:"."""
    items = []
    for where, r in read_jsonl(path):
        if "query" in r:
            query, choices = get(r, "query", where), get(r, "choices", where, list)
            gold = label_index(get(r, "gold", where, (int, str)), len(choices), where, "gold")
            query = query[len("Passage: "):] if query.startswith("Passage: ") else query  # the harness has no prefix
        else:
            query = f"{get(r, 'passage', where)}\nQuestion: {get(r, 'question', where)}?"
            choices, gold = ["no", "yes"], int(get(r, "answer", where, bool))
        items.append(multiple_choice(query + "\nAnswer:", choices, gold))
    return items


def read_piqa(path):
    """{"goal", "sol1", "sol2"} with the labels in a sibling file (piqa_valid-labels.lst: one 0/1 per line) or a "label" field."""
    labels_path = re.sub(r"\.jsonl$", "-labels.lst", path)
    labels = None
    if os.path.isfile(labels_path):
        with open(labels_path) as f:
            labels = [(f"{labels_path}:{i}", line.strip()) for i, line in enumerate(f, 1) if line.strip()]
    items = []
    for n, (where, r) in enumerate(read_jsonl(path)):
        if labels is not None:
            if n >= len(labels):
                raise DataError(f"{labels_path}: has {len(labels)} labels but {path} has more items")
            label = label_index(labels[n][1], 2, labels[n][0], "label")
        else:
            label = label_index(get(r, "label", where, (int, str)), 2, where, "label")
        sols = [get(r, "sol1", where), get(r, "sol2", where)]
        items.append(multiple_choice(f"Question: {get(r, 'goal', where)}\nAnswer:", sols, label))
    return items


def read_winogrande(path):
    """{"sentence" with one "_", "option1", "option2", "answer": "1"/"2"}. Partial evaluation: the context is the
    sentence up to the blank with the option filled in; the continuation, the same for both, is the rest."""
    items = []
    for where, r in read_jsonl(path):
        sentence = get(r, "sentence", where)
        if "_" not in sentence:
            raise DataError(f"{where}: field 'sentence' has no '_' blank")
        blank = sentence.index("_")
        options = [get(r, "option1", where), get(r, "option2", where)]
        answer = str(get(r, "answer", where, (int, str))).strip()
        if answer not in ("1", "2"):
            raise DataError(f"{where}: field 'answer' is {r['answer']!r}, expected '1' or '2'")
        gold = int(answer) - 1
        rest = " " + sentence[blank + 1:].strip()
        items.append(Item([(sentence[:blank] + option, rest) for option in options], gold, options))
    return items


def read_lambada(path):
    """{"text"}: the context is everything before the last space, the continuation " " + the last word."""
    items = []
    for where, r in read_jsonl(path):
        text = get(r, "text", where)
        if " " not in text.strip():
            raise DataError(f"{where}: field 'text' has no last word to predict")
        context, last_word = text.rsplit(" ", 1)
        items.append(Item([(context, " " + last_word)]))
    return items


def wikitext_detokenize(text):
    """The harness's WikiText detokenizer: undo the dataset's tokenization (" @-@ " -> "-", " , " -> ", " ...)."""
    text = text.replace("s '", "s'")
    text = re.sub(r"/' [0-9]/", r"/'[0-9]/", text)
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for spaced, joined in ((" : ", ": "), (" ; ", "; "), (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", ")):
        text = text.replace(spaced, joined)
    text = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", text)
    text = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", text)
    text = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", text)
    text = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', text)
    text = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", text)
    text = text.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    text = text.replace(" " + chr(176) + " ", chr(176))
    text = text.replace(" \n", "\n").replace("\n ", "\n")
    text = text.replace(" N ", " 1 ")
    return text.replace(" 's", "'s")


def read_wikitext(path):
    """WikiText raw text as the pages of the harness's document-level set (EleutherAI/wikitext_document_level): a page
    starts at each top-level heading line (" = Title = "; " = = Section = = " is not one) and its lines are joined
    with "\n", so it ends without one. CRLF line endings (a common copy of wiki.test.raw) are read as LF: kept, the
    \r stayed in every line and, counted as one line, the whole file was one page. Each Item keeps its page for the
    word and byte counts."""
    text = read_text(path).replace("\r\n", "\n").replace("\r", "\n")
    pages, current = [], []
    for line in text.split("\n"):
        squeezed = line.replace("= = =", "===").replace("= =", "==").strip()
        if squeezed.startswith("= ") and squeezed.endswith(" ="):  # a title: the page so far ends here
            if "\n".join(current).strip():
                pages.append("\n".join(current))
            current = []
        current.append(line)
    if "\n".join(current).strip():
        pages.append("\n".join(current))
    return [Item([("", page)]) for page in pages]


# task name -> (file names tried in --data-dir, in order; the reader of that format)
TASKS = {
    "wikitext2": (("wikitext2_test_sample.raw", "wiki.test.raw", "wikitext2_test.raw"), read_wikitext),
    "lambada": (("lambada_openai.jsonl", "lambada_test.jsonl", "lambada.jsonl"), read_lambada),
    "hellaswag": (("hellaswag_val.jsonl", "hellaswag.jsonl"), read_hellaswag),
    "arc_easy": (("arc_easy.jsonl",), read_arc),
    "arc_challenge": (("arc_challenge.jsonl",), read_arc),
    "winogrande": (("winogrande_dev.jsonl", "winogrande.jsonl"), read_winogrande),
    "piqa": (("piqa_valid.jsonl", "piqa.jsonl"), read_piqa),
    "boolq": (("boolq.jsonl", "boolq_dev.jsonl"), read_boolq),
}
NO_ACC_NORM = {"winogrande", "boolq"}  # the harness reports only acc for these (multiple-choice tasks report acc_norm too)


def find_task_file(data_dir, task):
    """The task's file in data_dir: one of its known names, or <task>.jsonl for a custom task."""
    names = TASKS[task][0] if task in TASKS else (task + ".jsonl",)
    return next((os.path.join(data_dir, n) for n in names if os.path.isfile(os.path.join(data_dir, n))), None)


def custom_tasks(data_dir):
    """Other .jsonl files in data_dir whose first record is llm-foundry multiple choice: each is a task named after it."""
    known = {n for names, _ in TASKS.values() for n in names}
    tasks = []
    for name in sorted(os.listdir(data_dir)):
        if name.endswith(".jsonl") and name not in known:
            with open(os.path.join(data_dir, name), "rb") as f:
                try:
                    first = json.loads(f.readline())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
            if isinstance(first, dict) and {"query", "choices", "gold"} <= first.keys():
                tasks.append(name[:-len(".jsonl")])
    return tasks


# --download: each task's public original release -> the file name above. Tried in order; nothing is fetched
# without the flag, and a failure names the file to place by hand. (url, member of a zip or None, file name)
DOWNLOADS = {
    "hellaswag": [("https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl", None, "hellaswag_val.jsonl")],
    "lambada": [("https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl", None, "lambada_openai.jsonl")],
    "piqa": [("https://yonatanbisk.com/piqa/data/valid.jsonl", None, "piqa_valid.jsonl"),
             ("https://yonatanbisk.com/piqa/data/valid-labels.lst", None, "piqa_valid-labels.lst")],
    "boolq": [("https://storage.googleapis.com/boolq/dev.jsonl", None, "boolq.jsonl")],
    "arc_easy": [("https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip", "ARC-Easy/ARC-Easy-Test.jsonl", "arc_easy.jsonl")],
    "arc_challenge": [("https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip", "ARC-Challenge/ARC-Challenge-Test.jsonl",
                       "arc_challenge.jsonl")],
    "winogrande": [("https://storage.googleapis.com/ai2-mosaic/public/winogrande/winogrande_1.1.zip", "winogrande_1.1/dev.jsonl",
                    "winogrande_dev.jsonl")],
    "wikitext2": [("https://wikitext.smerity.com/wikitext-2-raw-v1.zip", "wikitext-2-raw/wiki.test.raw", "wiki.test.raw")],
}


def download(tasks, data_dir):
    """Fetch the files of `tasks` that data_dir lacks (--download). Each file is written whole or not at all."""
    os.makedirs(data_dir, exist_ok=True)
    fetched = {}  # a zip serves several tasks (ARC): fetch it once
    for task in tasks:
        if task not in DOWNLOADS or find_task_file(data_dir, task):
            continue
        for url, member, name in DOWNLOADS[task]:
            print(f"downloading {task}: {url}")
            try:
                if url not in fetched:
                    with urllib.request.urlopen(url, timeout=60) as response:
                        fetched[url] = response.read()
                payload = fetched[url]
                if member is not None:
                    with zipfile.ZipFile(io.BytesIO(payload)) as z:
                        match = [n for n in z.namelist() if n.endswith(member)]
                        if not match:
                            raise OSError(f"the archive has no {member}")
                        payload = z.read(match[0])
            except (OSError, zipfile.BadZipFile) as e:
                raise FileNotFoundError(f"could not download {name} for {task} from {url} ({e}); "
                                        f"place it in {data_dir} by hand") from None
            tmp = os.path.join(data_dir, name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(payload)
            os.replace(tmp, os.path.join(data_dir, name))


def load_task(path, task, limit=None):
    items = (TASKS[task][1] if task in TASKS else read_custom)(path)
    if not items:
        raise DataError(f"{path}: no items")
    return items[:limit] if limit else items


# ----------------------------------------------------------------------------------------------------------------
# 2. Scoring: log P(continuation | context) for many (context, continuation) token pairs, batched.

class Scorer:
    """What scoring needs from a model: tokenize, the context window, and next-token logits of a padded batch.
    `model` is set for our MiniGPT, whose KV cache lets choices share one pass over their common context."""

    def __init__(self, encode, prefix_id, pad_id, max_len, logits_fn, vocab_size, device, model=None):
        self.encode, self.prefix_id, self.pad_id, self.max_len = encode, prefix_id, pad_id, max_len
        self.logits_fn, self.vocab_size, self.device, self.model = logits_fn, vocab_size, device, model
        self.tokens = 0  # tokens run through the model, for tokens/s

    def encode_pair(self, context, continuation):
        """Token ids of (context, continuation) as the harness splits them: encode the whole string and take the
        continuation as what follows the context's tokens, trailing spaces moved to the continuation first.
        Every scored text starts with prefix_id (<|im_start|> for our models), as every pretraining document and
        every generate.py prompt does: lm-evaluation-harness with add_bos_token=True (its default for a model
        exported by export_hf.py, whose tokenizer adds it) splits and scores the same tokens."""
        if not context:
            return [self.prefix_id], self.encode(continuation)  # nothing to condition on: start from the document token
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        context_ids = [self.prefix_id] + self.encode(context)
        return context_ids, ([self.prefix_id] + self.encode(context + continuation))[len(context_ids):]

    def fit(self, context_ids, continuation_ids):
        """Left-truncate to the window: the model reads at most max_len tokens (context + continuation minus its
        last). A continuation longer than the window itself keeps only its last max_len tokens (too_long says so;
        the harness refuses such items)."""
        full = context_ids + continuation_ids
        if len(full) <= self.max_len + 1:
            return context_ids, continuation_ids
        full = full[-(self.max_len + 1):]
        n_context = max(1, len(full) - len(continuation_ids))
        return full[:n_context], full[n_context:]

    def too_long(self, continuation_ids):
        return len(continuation_ids) > self.max_len


def our_scorer(run_dir, which="best", device="cpu", dtype=torch.float32):
    model = load_model(run_dir, device, which).to(dtype)
    tokenizer = BPETokenizer.load(os.path.join(run_dir, "tokenizer.json"))
    # documents in pretraining start with <|im_start|>, so it is the token an unconditioned text follows
    return Scorer(tokenizer.encode, tokenizer.bos_id, tokenizer.pad_id, model.config.max_seq_len,
                  lambda idx, lengths: model(idx).logits, model.config.vocab_size, device, model)


def hf_scorer(hf_dir, device="cpu", dtype=torch.float32):
    try:
        import transformers
    except ImportError:
        raise SystemExit("error: --hf needs transformers: pip install -r requirements-extras.txt") from None
    transformers.logging.set_verbosity_error()  # we window long texts ourselves; its "longer than max length" note misleads
    if not os.path.isfile(os.path.join(hf_dir, "config.json")):  # else transformers answers with a paragraph on tokenizers
        raise FileNotFoundError(f"{hf_dir}: no config.json; --hf takes a Hugging Face model folder (export_hf.py writes one)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device).eval()
    prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id  # as the harness
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_id

    def logits_fn(idx, lengths):  # right padding: the attention mask hides the pad tokens
        mask = (torch.arange(idx.shape[1], device=idx.device)[None, :] < lengths[:, None]).long()
        return model(input_ids=idx, attention_mask=mask).logits

    return Scorer(lambda text: tokenizer.encode(text, add_special_tokens=False), prefix_id, pad_id,
                  model.config.max_position_embeddings, logits_fn, model.config.vocab_size, device)


def continuation_score(logits, continuation_ids):
    """(sum of log-probs of the continuation, whether each of its tokens is the argmax) from its positions' logits (n, V)."""
    logprobs = logits.float().log_softmax(-1)
    target = torch.tensor(continuation_ids, device=logits.device)
    return logprobs.gather(-1, target[:, None]).sum().item(), bool((logprobs.argmax(-1) == target).all())


@torch.no_grad()
def score_each(scorer, pairs, batch_size, bar=None):
    """One row per pair: context + continuation (minus its last token), right-padded, longest first."""
    results = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        idx, lengths = pad_sequences([pairs[i][0] + pairs[i][1][:-1] for i in chunk], scorer.pad_id)
        logits = scorer.logits_fn(idx.to(scorer.device), lengths.to(scorer.device))  # (B, T, V)
        scorer.tokens += int(lengths.sum())
        for b, i in enumerate(chunk):
            context, continuation = pairs[i]
            first = len(context) - 1  # the logits at the context's last token predict the continuation's first
            results[i] = continuation_score(logits[b, first:first + len(continuation)], continuation)
        if bar is not None:
            bar.update(len(chunk))
    return results


@torch.no_grad()
def score_shared_context(scorer, pairs, batch_size, bar=None):
    """Pairs with the same context (the choices of one question) run the context once: prefill it into the KV cache,
    copy the cache once per choice, then run only the choices' tokens. Same numbers as score_each, fewer tokens."""
    model, device = scorer.model, scorer.device
    dtype = next(model.parameters()).dtype
    groups = {}  # context ids -> indices of the pairs that share it
    for i, (context, _) in enumerate(pairs):
        groups.setdefault(tuple(context), []).append(i)
    results = [None] * len(pairs)

    def run(contexts):
        L = max(len(c) for c in contexts)
        members = [(g, i) for g, c in enumerate(contexts) for i in groups[c]]  # (row of its context, pair index)
        n_rest = max(len(pairs[i][1]) for _, i in members) - 1  # continuation tokens to feed after the context
        pad_lens = torch.tensor([L - len(c) for c in contexts], device=device)
        idx = torch.tensor([[scorer.pad_id] * (L - len(c)) + list(c) for c in contexts], device=device)
        cache = KVCache(model.config, len(contexts), L + n_rest, device, dtype, pad_lens)
        first_logits = model(idx, cache=cache, last_logits_only=True).logits[:, -1]  # (G, V): each first token
        scorer.tokens += sum(len(c) for c in contexts)
        if n_rest:
            cache.reorder(torch.tensor([g for g, _ in members], device=device))  # one cache row per choice
            idx, lengths = pad_sequences([pairs[i][1][:-1] for _, i in members], scorer.pad_id)  # (R, n_rest)
            rest_logits = model(idx.to(device), cache=cache).logits  # (R, n_rest, V); right padding only follows what we read
            scorer.tokens += int(lengths.sum())
        for row, (g, i) in enumerate(members):
            continuation = pairs[i][1]
            logits = first_logits[g:g + 1]
            if len(continuation) > 1:
                logits = torch.cat([logits, rest_logits[row, :len(continuation) - 1]])
            results[i] = continuation_score(logits, continuation)
        if bar is not None:
            bar.update(len(members))

    batch, n_rows, L, n_rest = [], 0, 0, 0
    for context in sorted(groups, key=len, reverse=True):  # longest first: little padding, and errors show early
        size = len(groups[context])
        longest_rest = max(len(pairs[i][1]) for i in groups[context]) - 1
        if batch and (n_rows + size > batch_size or max(L, len(context)) + max(n_rest, longest_rest) > model.config.max_seq_len):
            run(batch)
            batch, n_rows, L, n_rest = [], 0, 0, 0
        batch.append(context)
        n_rows, L, n_rest = n_rows + size, max(L, len(context)), max(n_rest, longest_rest)
    if batch:
        run(batch)
    return results


def loglikelihoods(scorer, string_pairs, batch_size=32, share_context=True, bar=None):
    """([(log P(continuation | context), is_greedy)] for (context, continuation) strings in order, the set of pairs
    whose continuation alone is longer than the model's context window and was scored on its last tokens only)."""
    encoded, too_long = {}, set()  # lambada-style duplicates and repeated questions: encode each distinct pair once
    for p in string_pairs:
        if p not in encoded:
            context_ids, continuation_ids = scorer.encode_pair(*p)
            if scorer.too_long(continuation_ids):
                too_long.add(p)
            encoded[p] = scorer.fit(context_ids, continuation_ids)
    pairs = [encoded[p] for p in string_pairs]
    if share_context and scorer.model is not None:
        return score_shared_context(scorer, pairs, batch_size, bar), too_long
    return score_each(scorer, pairs, batch_size, bar), too_long


def rolling_windows(tokens, prefix_id, max_len, stride=None):
    """(context, continuation) pairs that score every token of a long text exactly once (the harness's
    loglikelihood_rolling): the first window predicts tokens[:max_len] from the prefix token, each later one the
    next `stride` tokens, reading the max_len tokens before their end. stride = max_len (the harness's default)
    gives disjoint windows; a smaller stride gives every token at least max_len - stride tokens of context, at
    max_len / stride times the compute."""
    stride = min(stride or max_len, max_len)
    first = min(max_len, len(tokens))
    pairs, done = [([prefix_id], tokens[:first])], first
    while done < len(tokens):
        n = min(len(tokens) - done, stride)
        end = done + n
        window = tokens[end - max_len - 1:end - 1]  # the max_len tokens the model reads
        pairs.append((window[:len(window) - (n - 1)], tokens[done:end]))
        done = end
    return pairs


# ----------------------------------------------------------------------------------------------------------------
# 3. Metrics, as the harness aggregates them.

def mean_stderr(values):
    """Standard error of a mean: sample standard deviation / sqrt(n) (the harness's mean_stderr)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None


def bootstrap_stderr(fn, values, iters=1000, seed=1234):
    """Standard error of fn(values) by resampling items (the harness bootstraps perplexity the same way)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    stats = [fn(values[rng.integers(0, len(values), len(values))]) for _ in range(iters)]
    return float(np.std(stats, ddof=1)) if len(values) > 1 else None


def evaluate_task(scorer, task, items, batch_size=32, share_context=True, progress=True, stride=None):
    """Score one task's items; returns {"metrics": {name: (value, stderr)}, "n", "chance", "lls", ...}."""
    start, tokens_before, n_too_long = time.perf_counter(), scorer.tokens, 0
    if task == "wikitext2":
        docs = [scorer.encode(wikitext_detokenize(item.pairs[0][1])) for item in items]
        windows = [(d, w) for d, tokens in enumerate(docs) for w in rolling_windows(tokens, scorer.prefix_id, scorer.max_len, stride)]
        with tqdm(total=len(windows), desc=task, disable=not progress, leave=False) as bar:
            scores = score_each(scorer, [w for _, w in windows], batch_size, bar)
        lls = [0.0] * len(items)
        for (d, _), (ll, _) in zip(windows, scores):
            lls[d] += ll
        pages = [item.pairs[0][1] for item in items]
        n_words = sum(len(re.split(r"\s+", p)) for p in pages)  # counted in the original page, as the harness does
        n_bytes = sum(len(p.encode("utf-8")) for p in pages)
        total = sum(lls)
        metrics = {"word_perplexity": (math.exp(-total / n_words), None),
                   "byte_perplexity": (math.exp(-total / n_bytes), None),
                   "bits_per_byte": (-total / n_bytes / math.log(2), None)}
        chance = {"bits_per_byte": math.log2(scorer.vocab_size) * sum(len(d) for d in docs) / n_bytes}  # uniform model
    else:
        requests = [p for item in items for p in item.pairs]
        with tqdm(total=len(requests), desc=task, disable=not progress, leave=False) as bar:
            scores, too_long = loglikelihoods(scorer, requests, batch_size, share_context, bar)
            scores = iter(scores)
        n_too_long = sum(any(p in too_long for p in item.pairs) for item in items)
        if n_too_long:  # PIQA has answers of 300+ tokens: the harness refuses those items, we say how many we kept
            print(f"warning: {task}: {n_too_long} of {len(items)} items have an answer longer than the model's "
                  f"{scorer.max_len}-token context; each such answer was scored on its last {scorer.max_len} tokens only "
                  f"(lm-evaluation-harness refuses these items)")
        per_item = [[next(scores) for _ in item.pairs] for item in items]
        lls = [[ll for ll, _ in s] for s in per_item]
        if task == "lambada":
            ll, greedy = np.array([s[0][0] for s in per_item]), [float(s[0][1]) for s in per_item]
            metrics = {"perplexity": (math.exp(-ll.mean()), bootstrap_stderr(lambda v: math.exp(-v.mean()), ll)),
                       "acc": (float(np.mean(greedy)), mean_stderr(greedy))}
            chance = {"acc": 0.0}
        else:
            correct = [float(np.argmax(l) == item.gold) for l, item in zip(lls, items)]
            metrics = {"acc": (float(np.mean(correct)), mean_stderr(correct))}
            if task not in NO_ACC_NORM:
                correct_norm = [float(np.argmax(np.array(l) / [len(c) for c in item.choices]) == item.gold)
                                for l, item in zip(lls, items)]  # the harness divides by characters (= bytes for ASCII)
                metrics["acc_norm"] = (float(np.mean(correct_norm)), mean_stderr(correct_norm))
            random_acc = float(np.mean([1 / len(item.pairs) for item in items]))
            chance = {name: random_acc for name in metrics}
    seconds = time.perf_counter() - start
    tokens = scorer.tokens - tokens_before
    return {"metrics": metrics, "n": len(items), "chance": chance, "lls": lls, "seconds": seconds,
            "tokens": tokens, "tokens_per_sec": tokens / max(seconds, 1e-9), "answers_longer_than_context": n_too_long}


def fmt(x):
    """A table cell: 4 decimals, or 4 significant digits for huge values (an untrained model's perplexity)."""
    return "-" if x is None else f"{x:.4f}" if abs(x) < 1e5 else f"{x:.4g}"


def format_table(results):
    """One line per (task, metric): value, standard error, item count and the random-chance baseline."""
    lines = [f"{'task':<14}{'metric':<17}{'value':>10}{'stderr':>10}{'n':>7}{'chance':>10}{'tok/s':>10}"]
    for task, r in results.items():
        for name, (value, stderr) in r["metrics"].items():
            lines.append(f"{task:<14}{name:<17}{fmt(value):>10}{fmt(stderr):>10}{r['n']:>7}{fmt(r['chance'].get(name)):>10}"
                         f"{r['tokens_per_sec']:>10.0f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# 4. Command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Zero-shot benchmarks scored as lm-evaluation-harness scores them.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a run directory written by any train_*.py (config.json, tokenizer.json, ckpt)")
    source.add_argument("--hf", help="a Hugging Face model folder (needs transformers), e.g. one export_hf.py wrote")
    p.add_argument("--tasks", nargs="+", help=f"any of {', '.join(TASKS)}, or NAME for a multiple-choice NAME.jsonl in "
                   "llm-foundry's format (query, choices, gold); default: every task with a file in --data-dir")
    p.add_argument("--data-dir", default="data/eval", help="folder with the task files (names in TASKS)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N items of each task")
    p.add_argument("--batch-size", type=int, default=32, help="continuations per forward pass")
    p.add_argument("--stride", type=int, default=None, help="wikitext2: tokens each window adds (default: the model's "
                   "context, disjoint windows as in the harness; smaller: more context per token, more compute)")
    p.add_argument("--which", default="best", choices=["best", "latest"], help="ckpt_best.pt or ckpt_latest.pt")
    p.add_argument("--device", default="auto", help="auto (cuda, else mps on a Mac, else cpu), cpu, cuda or mps")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16: faster, scores differ slightly")
    p.add_argument("--no-share-context", action="store_true", help="score every choice with its own full pass")
    p.add_argument("--download", action="store_true", help="fetch missing task files from their public releases first "
                   "(the only network access; without it nothing is downloaded)")
    p.add_argument("--out", default=None, help="results JSON (default: benchmark_results_<timestamp>.json in the model's folder)")
    p.add_argument("--num-threads", type=int, default=None)
    args = p.parse_args(argv)
    if not os.path.isdir(args.data_dir) and not args.download:
        p.error(f"--data-dir {args.data_dir}: no such folder (it should hold the task files, e.g. hellaswag_val.jsonl)")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    if args.stride is not None and args.stride < 1:
        p.error("--stride must be at least 1")
    args.device = resolve_device(args.device)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    keep_freed_memory(args.device)  # as training does: the (batch, T, vocab) logits of every batch are not faulted in again
    if args.download:
        download(args.tasks or TASKS, args.data_dir)
    found = {task: find_task_file(args.data_dir, task) for task in (args.tasks or [*TASKS, *custom_tasks(args.data_dir)])}
    missing = [task for task, path in found.items() if path is None]
    if args.tasks and missing:  # asked for by name: its file must be there
        names = ", ".join(TASKS[missing[0]][0] if missing[0] in TASKS else [missing[0] + ".jsonl"])
        raise FileNotFoundError(f"{args.data_dir}: no file for task {missing[0]} (looked for {names})")
    if not any(found.values()):
        raise FileNotFoundError(f"{args.data_dir}: no task files (expected names such as {', '.join(t[0][0] for t in TASKS.values())})")
    if missing:
        print(f"skipping (no file in {args.data_dir}): {', '.join(missing)}")
    task_items = {task: load_task(path, task, args.limit) for task, path in found.items() if path}  # all errors before any work
    if args.out:  # its folder too: a file in the way fails here, not after the scoring
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    dtype = getattr(torch, args.dtype)
    warn_slow_cpu_bf16(dtype, args.device)
    model_dir = args.checkpoint or args.hf
    if args.checkpoint:
        scorer = our_scorer(args.checkpoint, args.which, args.device, dtype)
    else:
        scorer = hf_scorer(args.hf, args.device, dtype)
    results = {}
    for task, items in task_items.items():
        results[task] = evaluate_task(scorer, task, items, args.batch_size, not args.no_share_context, stride=args.stride)
    print(format_table(results))
    seconds = sum(r["seconds"] for r in results.values())
    print(f"{scorer.tokens:,} tokens in {seconds:.1f} s ({scorer.tokens / max(seconds, 1e-9):,.0f} tokens/s)")

    out = args.out or os.path.join(model_dir, f"benchmark_results_{time.strftime('%Y%m%d-%H%M%S')}.json")
    report = {"model": model_dir, "kind": "checkpoint" if args.checkpoint else "hf", "data_dir": args.data_dir,
              "limit": args.limit, "dtype": args.dtype, "stride": args.stride, "tokens": scorer.tokens, "seconds": seconds,
              "tokens_per_sec": scorer.tokens / max(seconds, 1e-9),
              "results": {task: {"file": found[task], "n": r["n"], "seconds": r["seconds"], "tokens_per_sec": r["tokens_per_sec"],
                                 "answers_longer_than_context": r["answers_longer_than_context"],
                                 "metrics": {name: {"value": v, "stderr": s, "chance": r["chance"].get(name)}
                                             for name, (v, s) in r["metrics"].items()}}
                          for task, r in results.items()}}
    if os.path.exists(out) and not os.path.isfile(out):  # a device or pipe (--out /dev/stdout): write to it directly
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
    else:  # whole or not at all
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, out)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    cli(main)
