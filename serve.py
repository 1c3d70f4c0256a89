"""
Serve a trained model the way models are used today: an OpenAI-compatible HTTP API and a chat page in the browser.

    python serve.py --checkpoint checkpoints/sft_tiny              # then open http://127.0.0.1:8000/
    python serve.py --checkpoint hf_tiny --port 8080 --api-key sk-local   # an export_hf.py folder works too

    curl http://127.0.0.1:8000/v1/chat/completions -H "Content-Type: application/json" \\
         -d '{"messages": [{"role": "user", "content": "Where does Mira live?"}], "max_tokens": 24}'

Endpoints: POST /v1/chat/completions (ChatML template; tools, tool_choice, tool calls and reasoning_content as OpenAI
and vLLM send them) and /v1/completions (plain text), GET /v1/models, /health, / (chat.html), and POST
/tools/calculator (the safe calculator, for the chat page's tool calls). Responses, streamed chunks (server-sent
events ending in `data: [DONE]`) and errors follow OpenAI's schema, so the official `openai` package and other OpenAI
clients work unchanged.

Concurrency (continuous batching): one engine thread owns the model. Every decode step runs every active sequence
as one batch over one shared KV cache; a request that arrives joins at the next step (its prompt is prefilled on
its own, then its keys and values are copied into the batch cache), and a finished or abandoned sequence leaves at
once. Rows of different lengths share the cache right-aligned, each with its own left padding (as generate.py pads
a batch), so its rotary positions and attention mask stay its own.

Sections: 1 flags, 2 the engine (batching), 3 requests (validation, OpenAI schema), 4 HTTP, 5 main.
"""
import argparse
import collections
import hmac
import json
import os
import queue
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from common import cli, cpu_threads, keep_freed_memory, resolve_device
from export_hf import read_hf_folder
from generate import GenerationConfig, TextGenerator, keep_to_offered, load_generator, process_logits, sample_from
from model import KVCache, hf_folder_message, quantize_int8
from tools import CallConstraint, calculate, parse_assistant

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat.html")


# ----------------------------------------------------------------------------- 1. flags
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="OpenAI-compatible server and chat page for a run directory.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run directory, or a Hugging Face folder from export_hf.py")
    p.add_argument("--which", default="best", choices=["best", "latest"], help="ckpt_best.pt or ckpt_latest.pt")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/ requests")
    p.add_argument("--model-name", default=None, help="the model id clients see (default: the folder's name)")
    p.add_argument("--max-batch", type=int, default=16, help="sequences decoded together; more wait their turn")
    p.add_argument("--max-queue", type=int, default=256, help="sequences waiting beyond the batch; more get HTTP 429")
    p.add_argument("--max-body-kb", type=int, default=256, help="largest request body accepted (HTTP 413 above)")
    p.add_argument("--max-n", type=int, default=8, help="largest n (choices per request)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda, else mps on a Mac, else cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="default float32, or bfloat16 with --quantize int8 (as generate.py)")
    p.add_argument("--quantize", default=None, choices=["int8"], help="int8 weights (faster decoding on CPU)")
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads (default: one per physical core)")
    p.add_argument("--quiet", action="store_true", help="no line per request on stderr")
    p.add_argument("--free-calls", action="store_true", help="let the model write any tool name and argument name "
                   "(default: a call's names are kept to the request's tools, as guided decoding does)")
    args = p.parse_args(argv)
    for name, low in (("port", 0), ("max_batch", 1), ("max_queue", 1), ("max_body_kb", 1), ("max_n", 1)):
        if getattr(args, name) < low:
            p.error(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    return args


# ----------------------------------------------------------------------------- 2. the engine (batching)
class Sequence:
    """One choice being generated: its prompt ids, sampling settings, the tokens so far, and the request's event
    queue where its text goes as ("text", index, piece) and finally ("done", index, finish_reason, n_tokens)."""

    def __init__(self, prompt_ids, cfg, index, events, constraint=None, forced=""):
        self.prompt_ids, self.cfg, self.index, self.events = prompt_ids, cfg, index, events
        # tools.CallConstraint of the offered tools (None: free), and the text the prompt put in the turn already
        self.constraint, self.forced = constraint, forced
        self.ids, self.sent = [], ""  # generated token ids; the text already sent
        self.finish_reason = None
        self.cancelled = False  # set by the HTTP thread when the client has gone
        self.rng = None          # a seeded torch.Generator on the model's device, made when it joins
        self.next_logits = None  # (1, vocab): what the next token is sampled from
        self.seen = None         # (1, vocab) bools, for the repetition penalty


class Engine:
    """Continuous batching over one KV cache. Only the engine thread touches the model and the cache; HTTP threads
    call submit() and read their request's event queue."""

    def __init__(self, generator, max_batch=16, max_queue=256, start=True, constrain_calls=True):
        self.generator, self.model, self.tokenizer = generator, generator.model, generator.tokenizer
        self.call_id = self.tokenizer.special_tokens.get("<tool_call>")
        self.constrain_calls = constrain_calls  # keep tool-call names and argument names to the offered tools
        self.config, self.device = self.model.config, generator.device
        # an fp32 cache on CPU even for a bf16 model, as generate.py: one-query attention is ~4x faster in fp32 there
        self.cache_dtype = torch.float32 if self.device.type == "cpu" else generator.dtype
        self.max_batch, self.max_queue = max_batch, max_queue
        self.waiting = collections.deque()
        self.wake = threading.Condition()
        self.rows = []      # the active sequences, in the order of the cache's rows
        self.cache = None   # KVCache of the active rows; cache.pad_lens[b] = where row b's tokens start
        self.served = {"sequences": 0, "tokens": 0, "steps": 0, "largest_batch": 0}
        if start:  # (a test drives join() and step() by hand instead)
            threading.Thread(target=self.run, name="engine", daemon=True).start()

    def submit(self, sequences):
        with self.wake:
            if len(self.waiting) + len(sequences) > self.max_queue:
                raise Overloaded(f"{len(self.waiting)} sequences are already waiting (--max-queue {self.max_queue})")
            self.waiting.extend(sequences)
            self.wake.notify()

    def load(self):
        return {"active": len(self.rows), "waiting": len(self.waiting), **self.served}

    def run(self):
        while True:
            with self.wake:
                while not self.waiting and not self.rows:
                    self.wake.wait()
                room = self.max_batch - len(self.rows)
                joining = [self.waiting.popleft() for _ in range(min(room, len(self.waiting)))]
            try:
                with torch.no_grad():
                    for seq in joining:
                        self.join(seq)
                    self.step()
            except Exception as e:  # noqa: BLE001 - a bug must not kill the server: fail these requests, keep serving
                for seq in self.rows + joining:
                    seq.events.put(("error", f"{type(e).__name__}: {e}"))
                self.rows, self.cache = [], None

    def join(self, seq):
        """Prefill a new sequence's prompt on its own, then copy its keys/values into the batch cache, right-aligned
        at the cache's current position (what is already there shifts right if the prompt is longer)."""
        if seq.cancelled:
            return
        L = len(seq.prompt_ids)
        own = KVCache(self.config, 1, L, self.device, self.cache_dtype)
        idx = torch.tensor([seq.prompt_ids], device=self.device)
        seq.next_logits = self.generator.forward(idx, cache=own, last_logits_only=True).logits[:, -1].float()
        if seq.cfg.seed is not None:
            seq.rng = torch.Generator(device=self.device).manual_seed(seq.cfg.seed)
        if seq.cfg.repetition_penalty != 1.0:
            seq.seen = torch.zeros(1, self.config.vocab_size, dtype=torch.bool, device=self.device)
            seq.seen[0, seq.prompt_ids] = True
        if self.cache is None:
            self.cache = KVCache(self.config, 0, self.config.max_seq_len, self.device, self.cache_dtype)
            self.cache.pad_lens = torch.zeros(0, dtype=torch.long, device=self.device)
        cache, pos = self.cache, self.cache.pos
        shift = max(0, L - pos)
        for layer in range(self.config.n_layers):
            for kv, new in ((cache.k, own.k[layer]), (cache.v, own.v[layer])):
                old = kv[layer]
                if shift:  # every row moves right: a row's rotary positions count from its own start, so they stay
                    old = torch.cat([old.new_zeros(*old.shape[:2], shift, old.shape[3]), old[:, :, :-shift]], dim=2)
                row = old.new_zeros(1, *old.shape[1:])
                row[:, :, pos + shift - L:pos + shift] = new
                kv[layer] = torch.cat([old, row])
        cache.pos = pos + shift
        cache.pad_lens = torch.cat([cache.pad_lens + shift, torch.tensor([cache.pos - L], device=self.device)])
        self.rows.append(seq)
        self.served["sequences"] += 1

    def step(self):
        """One token for every active sequence: sample it, send its text, drop the finished, run the rest one step."""
        going_on = []  # (row, token) of the sequences that continue
        for row, seq in enumerate(self.rows):
            if seq.cancelled:  # the client went away: its row is freed now
                seq.finish_reason = "cancelled"
                continue
            logits = process_logits(seq.next_logits, seq.cfg, seq.seen)
            if seq.constraint is not None and (self.call_id in seq.ids or "<tool_call>" in seq.forced):
                logits = keep_to_offered(logits, seq.constraint, seq.forced + self.tokenizer.decode(seq.ids))
            if seq.cfg.greedy:
                token = int(logits.argmax(-1))
            else:
                token = int(sample_from(logits.softmax(-1), seq.rng))
            self.emit(seq, token)
            self.served["tokens"] += 1
            if seq.finish_reason is None:
                going_on.append((row, token))
        self.leave([row for row, _ in going_on])
        if not self.rows:
            return
        idx = torch.tensor([[token] for _, token in going_on], device=self.device)  # (rows, 1)
        logits = self.generator.forward(idx, cache=self.cache, last_logits_only=True).logits[:, -1].float()
        for seq, row_logits in zip(self.rows, logits):
            seq.next_logits = row_logits[None]
        self.served["steps"] += 1
        self.served["largest_batch"] = max(self.served["largest_batch"], len(self.rows))

    def emit(self, seq, token):
        """Send the new text of a sequence (whole characters only) and decide whether it has finished."""
        cfg, tok = seq.cfg, self.tokenizer
        if cfg.stop_on_eos and token == tok.eos_id:
            return self.finish(seq, "stop")
        seq.ids.append(token)
        if seq.seen is not None:
            seq.seen[0, token] = True
        text, stopped = TextGenerator._cut_at_stop(tok.decode(seq.ids), cfg)
        last = stopped or len(seq.ids) >= cfg.max_new_tokens
        if len(text) > len(seq.sent) and (last or not text.endswith("\ufffd")):  # half a UTF-8 character waits
            seq.events.put(("text", seq.index, text[len(seq.sent):]))
            seq.sent = text
        if last:
            self.finish(seq, "stop" if stopped else "length")

    def finish(self, seq, reason):
        seq.finish_reason = reason
        seq.events.put(("done", seq.index, reason, len(seq.ids)))

    def leave(self, keep):
        """Keep only the cache rows `keep`, then drop the positions no remaining row reads (the smallest padding)."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache = None  # the next request starts a fresh cache, so memory goes back to what it was
            return
        cache = self.cache
        cache.reorder(torch.tensor(keep, device=self.device))  # the k/v rows and pad_lens of the rows kept
        cut = int(cache.pad_lens.min())
        if cut:
            for kv in (cache.k, cache.v):
                for layer, t in enumerate(kv):
                    kv[layer] = torch.cat([t[:, :, cut:], t.new_zeros(*t.shape[:2], cut, t.shape[3])], dim=2)
            cache.pos -= cut
            cache.pad_lens = cache.pad_lens - cut


class Overloaded(Exception):
    """More sequences waiting than --max-queue: the request gets HTTP 429 and may be retried."""


# ----------------------------------------------------------------------------- 3. requests (validation, OpenAI schema)
class BadRequest(Exception):
    """A request we answer with a 4xx in OpenAI's error schema: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, message, param=None, code=None, status=HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


IGNORED_AT_DEFAULT = {"frequency_penalty": 0, "presence_penalty": 0, "logprobs": False}  # accepted only at these values
KNOWN = {"model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n", "stream",
         "stream_options", "user", "repetition_penalty", "tools", "tool_choice", "parallel_tool_calls",
         "chat_template_kwargs", *IGNORED_AT_DEFAULT}


def field(body, name, kinds, check=None, rule=None, default=None):
    """body[name] if present and not null, checked: the wrong type or an out-of-range value is a 400 naming it."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        expected = " or ".join({int: "an integer", float: "a number", str: "a string", bool: "a boolean", list: "an array",
                                dict: "an object"}[k] for k in kinds)
        raise BadRequest(f"'{name}' must be {expected}, got {json.dumps(value)[:40]}", name, "invalid_type")
    if check is not None and not check(value):
        raise BadRequest(f"'{name}' must be {rule}, got {value}", name, "invalid_value")
    return value


def message_text(message, i):
    """A message's content: a string, or OpenAI's list of parts ({"type": "text", "text": ...}), joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                                         for p in content):
        return "".join(p["text"] for p in content)
    raise BadRequest(f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")


def chat_turns(messages):
    """OpenAI messages -> the chat template's: roles system (or developer), user, assistant (with tool_calls and
    reasoning_content), tool (the result of a call)."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array of {role, content} objects", "messages")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
        role = {"developer": "system"}.get(m.get("role"), m.get("role"))
        if role not in ("system", "user", "assistant", "tool"):
            raise BadRequest(f"messages[{i}].role is {json.dumps(m.get('role'))}; expected system, developer, user, "
                             f"assistant or tool", f"messages[{i}].role", "invalid_value")
        calls = m.get("tool_calls") or []
        if role == "assistant" and calls:
            ok = isinstance(calls, list) and all(isinstance(c, dict) and isinstance(c.get("function"), dict)
                                                 and isinstance(c["function"].get("name"), str)
                                                 and isinstance(c["function"].get("arguments", ""), str) for c in calls)
            if not ok:
                raise BadRequest(f"messages[{i}].tool_calls must be [{{id, type, function: {{name, arguments (a JSON "
                                 f"string)}}}}]", f"messages[{i}].tool_calls")
            turn = {"role": role, "content": message_text(m, i) if m.get("content") is not None else "", "tool_calls": calls}
        else:
            turn = {"role": role, "content": message_text(m, i)}
        if role == "assistant" and isinstance(m.get("reasoning_content"), str):
            turn["reasoning_content"] = m["reasoning_content"]
        if role == "tool":  # as OpenAI: a tool message answers a call an earlier assistant message made, by its id
            asked = {c.get("id") for t in turns if t["role"] == "assistant" for c in t.get("tool_calls", [])}
            if m.get("tool_call_id") not in asked:
                raise BadRequest(f"messages[{i}].tool_call_id {json.dumps(m.get('tool_call_id'))} answers no tool call of "
                                 f"an earlier assistant message", f"messages[{i}].tool_call_id")
        turns.append(turn)
    return turns


def tool_settings(body):
    """(tools to offer or None, the text the assistant turn is forced to start with, enable_thinking) from tools,
    tool_choice and chat_template_kwargs. tool_choice: "auto" (the model decides), "none" (no tools offered),
    "required" (the turn starts a call), or {"type": "function", "function": {"name"}} (the turn starts that call)."""
    tools = field(body, "tools", (list,))
    if tools is not None and not all(isinstance(t, dict) and isinstance(t.get("function"), dict)
                                     and isinstance(t["function"].get("name"), str) for t in tools):
        raise BadRequest("'tools' must be [{\"type\": \"function\", \"function\": {\"name\", \"description\", "
                         "\"parameters\"}}]", "tools")
    thinking = field(body, "chat_template_kwargs", (dict,), default={}).get("enable_thinking", True)
    choice = body.get("tool_choice", "auto")
    names = [t["function"]["name"] for t in tools or []]
    if choice is None or choice == "auto":
        return tools or None, "", thinking
    if choice == "none":
        return None, "", thinking
    if not tools:
        raise BadRequest("'tool_choice' other than auto or none needs 'tools'", "tool_choice")
    # a forced call starts the turn at once (no reasoning), as the calls in the training data do
    if choice == "required":
        return tools, '<tool_call>\n{"name": "', True
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if name not in names:
        raise BadRequest(f"'tool_choice' must be auto, none, required or {{\"type\": \"function\", \"function\": "
                         f"{{\"name\": one of {names}}}}}", "tool_choice", "invalid_value")
    return tools, '<tool_call>\n{"name": "' + name + '", "arguments":', True


def parse_request(body, kind, engine, max_n):
    """A request body -> (prompts as token id lists, GenerationConfig per choice, stream, include_usage, warnings,
    forced: the text the prompt already put in the assistant's turn, read with the reply). Everything is checked
    before anything is queued."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    tokenizer, context = engine.tokenizer, engine.config.max_seq_len
    prompt_key = "messages" if kind == "chat" else "prompt"
    unknown = sorted(set(body) - KNOWN - {prompt_key})
    if unknown:
        raise BadRequest(f"unrecognized request argument supplied: {unknown[0]}", unknown[0], "unknown_parameter")
    for name, default in IGNORED_AT_DEFAULT.items():
        if body.get(name) not in (None, default):
            raise BadRequest(f"'{name}' is not supported (only {json.dumps(default)})", name, "unsupported_parameter")
    forced, tools = "", None
    if kind == "chat":
        turns = chat_turns(body.get("messages"))
        tools, forced, thinking = tool_settings(body)
        try:
            prompt = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tools=tools, enable_thinking=thinking)[0]
        except ValueError as e:  # e.g. a tool call without a name, or a tokenizer from before tools and reasoning
            raise BadRequest(f"messages: {e}", "messages") from None
        if forced:  # the forced start of the assistant's turn, encoded as the template encodes a call
            prompt = prompt + tokenizer.encode(forced, allow_special=True)
        elif not thinking:  # the template ended the prompt with an empty reasoning block: the reply is read after it
            forced = "<think>\n\n</think>"
        prompts = [prompt]
    else:
        prompt = body.get("prompt")
        texts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadRequest("'prompt' must be a string or a non-empty array of strings", "prompt")
        prompts = [engine.generator.encode_prompt(t) for t in texts]  # <|im_start|> text, as in training
    longest = max(len(p) for p in prompts)
    if longest >= context:  # as OpenAI: refuse, and say by how much (generate.py keeps the end; a server should not guess)
        raise BadRequest(f"this model's context is {context} tokens and the prompt is {longest}: shorten it by at least "
                         f"{longest - context + 1} tokens", prompt_key, "context_length_exceeded")
    max_tokens = field(body, "max_completion_tokens", (int,), lambda v: v >= 1, "at least 1") or \
        field(body, "max_tokens", (int,), lambda v: v >= 1, "at least 1")
    room = context - longest
    warnings = []
    if max_tokens is not None and max_tokens > room:  # what was cut, said as generate.py says it
        warnings.append(f"max_tokens {max_tokens} capped to {room}: a {longest}-token prompt leaves {room} of the "
                        f"model's {context}-token context")
    temperature = field(body, "temperature", (int, float), lambda v: 0 <= v <= 2, "in [0, 2]", 1.0)
    stop = field(body, "stop", (str, list), default=[])
    stop = [stop] if isinstance(stop, str) else stop
    if len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest("'stop' must be a non-empty string or an array of up to 4 of them", "stop", "invalid_value")
    n = field(body, "n", (int,), lambda v: 1 <= v <= max_n, f"in 1..{max_n} (--max-n)", 1)
    seed = field(body, "seed", (int,))
    settings = dict(max_new_tokens=min(max_tokens or room, room), greedy=temperature == 0, temperature=temperature,
                    top_p=field(body, "top_p", (int, float), lambda v: 0 < v <= 1, "in (0, 1]", 1.0),
                    top_k=field(body, "top_k", (int,), lambda v: v >= 0, "at least 0", 0),
                    repetition_penalty=field(body, "repetition_penalty", (int, float), lambda v: v > 0, "above 0", 1.0),
                    stop_strings=stop)
    # choice j of prompt i gets seed + j: n > 1 choices differ, and the same seed repeats them
    configs = [GenerationConfig(**settings, seed=None if seed is None else seed + j) for j in range(n)]
    stream = field(body, "stream", (bool,), default=False)
    include_usage = bool(field(body, "stream_options", (dict,), default={}).get("include_usage"))
    field(body, "model", (str,))
    # a call's name and argument names are kept to the offered tools' (vLLM's guided decoding, OpenAI's strict mode):
    # the tiny tool model wrote {"expr": ...} for a calculator whose parameter is "expression"
    constraint = CallConstraint(tokenizer, tools) if kind == "chat" and tools and engine.constrain_calls else None
    return prompts, configs, stream, include_usage, warnings, forced, constraint


# ----------------------------------------------------------------------------- 4. HTTP
class Handler(BaseHTTPRequestHandler):
    """One request per call, on its own thread (ThreadingHTTPServer). make_server() sets the class attributes."""
    protocol_version = "HTTP/1.1"  # keep-alive: the openai client reuses its connection
    server_version = "MiniLLM"
    engine = model_name = api_key = page = None
    max_body, max_n, quiet = 256 * 1024, 8, False
    timeout = 120  # seconds a silent client may hold a thread

    # ------------------------------------------------------------------ routes
    def do_GET(self):
        path = self.path.split("?")[0]
        if path in ("/", "/index.html"):
            return self.send(HTTPStatus.OK, self.page, "text/html; charset=utf-8")
        if path == "/health":
            return self.send_json(HTTPStatus.OK, {"status": "ok", "model": self.model_name, **self.engine.load()})
        if path == "/v1/models":
            if self.authorized():
                self.send_json(HTTPStatus.OK, {"object": "list", "data": [
                    {"id": self.model_name, "object": "model", "created": int(START), "owned_by": "mini-llm",
                     "context_length": self.engine.config.max_seq_len}]})
            return
        self.send_error_json(HTTPStatus.NOT_FOUND, f"no route GET {path}", code="not_found")

    def do_POST(self):
        path = self.path.split("?")[0]
        if path == "/tools/calculator":  # the chat page runs the model's calculator calls here (tools.calculate)
            if self.authorized():
                try:
                    body = self.read_json()
                except BadRequest as e:
                    return self.send_error_json(e.status, str(e), e.param, e.code)
                expression = body.get("expression") if isinstance(body, dict) else None
                self.send_json(HTTPStatus.OK, {"result": calculate(expression)})
            return
        kind = {"/v1/chat/completions": "chat", "/v1/completions": "text"}.get(path)
        if kind is None:
            self.close_connection = True  # its body is not read
            return self.send_error_json(HTTPStatus.NOT_FOUND, f"no route POST {path}", code="not_found")
        if not self.authorized():
            return
        started = time.time()
        try:
            prompts, configs, stream, include_usage, warnings, forced, constraint = parse_request(
                self.read_json(), kind, self.engine, self.max_n)
            events = queue.Queue()
            sequences = [Sequence(p, cfg, i * len(configs) + j, events, constraint, forced)
                         for i, p in enumerate(prompts) for j, cfg in enumerate(configs)]
            self.engine.submit(sequences)
        except BadRequest as e:
            return self.send_error_json(e.status, str(e), e.param, e.code)
        except Overloaded as e:
            return self.send_error_json(HTTPStatus.TOO_MANY_REQUESTS, f"server busy: {e}; retry shortly",
                                        code="rate_limit_exceeded", kind="rate_limit_error")
        reply = Reply(kind, self.model_name, sequences, sum(len(p) for p in prompts), warnings, forced)
        tokens = self.stream(reply, events, include_usage) if stream else self.complete(reply, events)
        if not self.quiet:
            print(f"{self.command} {path} {len(sequences)} choice(s), {tokens} tokens in {time.time() - started:.2f} s"
                  f"{' (streamed)' if stream else ''}", file=sys.stderr)

    # ------------------------------------------------------------------ answering
    def complete(self, reply, events):
        """Wait for every choice, then answer with one JSON object."""
        while reply.pending:
            event = events.get()
            if event[0] == "error":
                self.send_error_json(HTTPStatus.INTERNAL_SERVER_ERROR, event[1], code="server_error", kind="server_error")
                return 0
            reply.take(event)
        self.send_json(HTTPStatus.OK, reply.whole())
        return reply.completion_tokens

    def stream(self, reply, events, include_usage):
        """Server-sent events: a chunk per piece of text, a last chunk per choice with its finish_reason, the usage if
        asked (stream_options.include_usage), then data: [DONE]. A client that goes away frees its rows at once."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.close_connection = True
        try:
            for chunk in reply.opening_chunks():
                self.write_event(chunk)
            while reply.pending:
                event = events.get()
                if event[0] == "error":
                    self.write_event({"error": {"message": event[1], "type": "server_error"}})
                    return 0
                for chunk in reply.chunks(event):
                    self.write_event(chunk)
            if include_usage:
                self.write_event(reply.usage_chunk())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            for seq in reply.sequences:
                seq.cancelled = True  # the engine drops these rows at its next step
        return reply.completion_tokens

    def write_event(self, obj):
        self.wfile.write(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode())
        self.wfile.flush()

    # ------------------------------------------------------------------ plumbing
    def authorized(self):
        if self.api_key is None:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
            return True
        self.close_connection = True
        self.send_error_json(HTTPStatus.UNAUTHORIZED, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                             code="invalid_api_key")
        return False

    def read_json(self):
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True
            raise BadRequest("a JSON body with a Content-Length header is required", status=HTTPStatus.LENGTH_REQUIRED)
        if int(length) > self.max_body:
            self.close_connection = True  # the body stays unread
            raise BadRequest(f"the body is {int(length):,} bytes; the limit is {self.max_body:,} (--max-body-kb)",
                             code="request_too_large", status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest("the body is not UTF-8", code="invalid_json") from None
        except json.JSONDecodeError as e:
            raise BadRequest(f"the body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})",
                             code="invalid_json") from None

    def send(self, status, payload, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def send_json(self, status, obj):
        self.send(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json")

    def send_error_json(self, status, message, param=None, code=None, kind="invalid_request_error"):
        self.send_json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

    def log_message(self, format, *args):  # the default logs every request to stderr; we log ours in do_POST
        pass


class Reply:
    """The OpenAI objects of one request: the whole response, or its streamed chunks, built from engine events."""

    def __init__(self, kind, model_name, sequences, prompt_tokens, warnings, forced=""):
        self.kind, self.sequences, self.prompt_tokens, self.warnings = kind, sequences, prompt_tokens, warnings
        self.forced = forced  # chat: the text the answer was made to start with (a forced tool call), parsed with it
        self.sent = [{"reasoning_content": "", "content": "", "tool_calls": 0} for _ in sequences]  # streamed so far
        prefix, self.object = ("chatcmpl", "chat.completion") if kind == "chat" else ("cmpl", "text_completion")
        self.head = {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model_name}
        self.texts = [""] * len(sequences)
        self.finish = [None] * len(sequences)
        self.completion_tokens = 0
        self.pending = len(sequences)

    def take(self, event):
        if event[0] == "text":
            self.texts[event[1]] += event[2]
        else:  # ("done", index, finish_reason, tokens)
            self.finish[event[1]], self.pending = event[2], self.pending - 1
            self.completion_tokens += event[3]

    def usage(self):
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def parsed(self, i):
        """(choice i's text so far read as an assistant turn, its readable tool calls)."""
        parsed = parse_assistant(self.forced + self.texts[i], final=self.finish[i] is not None)
        return parsed, [c for c in parsed["tool_calls"] if c["name"] is not None]

    def message(self, i):
        """Choice i as OpenAI's assistant message: the text the model wrote, split into reasoning_content (what was inside
        <think>, the vLLM / DeepSeek field), content, and tool_calls (arguments as a JSON string, as OpenAI sends them)."""
        parsed, calls = self.parsed(i)
        message = {"role": "assistant", "content": parsed["content"]}
        if parsed["reasoning_content"]:
            message["reasoning_content"] = parsed["reasoning_content"]
        if calls:
            message["content"] = parsed["content"] or None
            message["tool_calls"] = [self.tool_call(i, j, c) for j, c in enumerate(calls)]
        return message

    def tool_call(self, i, j, call):
        return {"id": f"call_{self.head['id'][-12:]}_{i}_{j}", "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]}}

    def finish_reason(self, i):
        return "tool_calls" if self.parsed(i)[1] and self.finish[i] == "stop" else self.finish[i]

    def whole(self):
        if self.kind == "chat":
            choices = [{"index": i, "message": self.message(i), "logprobs": None, "finish_reason": self.finish_reason(i)}
                       for i in range(len(self.texts))]
        else:
            choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                       for i, (text, reason) in enumerate(zip(self.texts, self.finish))]
        extra = {"warnings": self.warnings} if self.warnings else {}
        return {**self.head, "object": self.object, "choices": choices, "usage": self.usage(), **extra}

    def _chunk(self, index, text=None, finish_reason=None, role=False, delta=None):
        if self.kind == "chat":
            delta = delta or ({"role": "assistant", "content": ""} if role else {} if text is None else {"content": text})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return {**self.head, "object": self.object + ".chunk" if self.kind == "chat" else self.object, "choices": [choice]}

    def opening_chunks(self):
        """Chat streams open each choice with its role, as OpenAI's do; the first chunk also carries any warning."""
        chunks = [self._chunk(i, role=True) for i in range(len(self.sequences))] if self.kind == "chat" else []
        if self.warnings:
            chunks = chunks or [self._chunk(0, text="")]
            chunks[0]["warnings"] = self.warnings
        return chunks

    def chunks(self, event):
        """The chunks an engine event makes. Chat: the text so far is parsed again and only what is new is sent, as
        delta.reasoning_content, delta.content, or delta.tool_calls (one whole call, with its index, once closed)."""
        self.take(event)
        i = event[1]
        if self.kind != "chat":
            return [self._chunk(i, text=event[2]) if event[0] == "text" else self._chunk(i, finish_reason=event[2])]
        (parsed, calls), sent, out = self.parsed(i), self.sent[i], []  # at "done" the turn is final: held text goes out
        for key in ("reasoning_content", "content"):
            now = parsed[key] or ""
            if len(now) > len(sent[key]) and now.startswith(sent[key]):
                out.append(self._chunk(i, delta={key: now[len(sent[key]):]}))
                sent[key] = now
        for j in range(sent["tool_calls"], len(calls)):
            out.append(self._chunk(i, delta={"tool_calls": [{"index": j, **self.tool_call(i, j, calls[j])}]}))
        sent["tool_calls"] = len(calls)
        if event[0] != "text":
            out.append(self._chunk(i, finish_reason=self.finish_reason(i)))
        return out

    def usage_chunk(self):
        return {**self.head, "object": self.object + ".chunk" if self.kind == "chat" else self.object, "choices": [],
                "usage": self.usage()}


# ----------------------------------------------------------------------------- 5. main
START = time.time()


def load_for_serving(checkpoint, which="best", device="cpu", dtype=torch.float32, quantize=None):
    """A TextGenerator from a run directory, or from a Hugging Face folder that export_hf.py wrote."""
    if hf_folder_message(checkpoint) is None:
        return load_generator(checkpoint, device, dtype, quantize, which=which)
    model, tokenizer = read_hf_folder(checkpoint)
    if quantize == "int8":
        quantize_int8(model)
    generator = TextGenerator(model.to(device=device, dtype=dtype), tokenizer)
    generator.checkpoint = model.checkpoint
    return generator


def make_server(generator, host="127.0.0.1", port=0, model_name="mini-llm", api_key=None, max_batch=16,
                max_queue=256, max_body_kb=256, max_n=8, quiet=False, constrain_calls=True):
    """The HTTP server (not yet serving: call serve_forever) and its engine, for serve.py and for tests."""
    with open(PAGE, "rb") as f:
        page = f.read()
    engine = Engine(generator, max_batch, max_queue, constrain_calls=constrain_calls)
    handler = type("BoundHandler", (Handler,), dict(engine=engine, model_name=model_name, api_key=api_key, page=page,
                                                    max_body=max_body_kb * 1024, max_n=max_n, quiet=quiet))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True  # a hung client does not keep the process alive at shutdown
    return server, engine


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    threads = cpu_threads(args.num_threads)
    keep_freed_memory(device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.quantize == "int8" else "float32"))
    generator = load_for_serving(args.checkpoint, args.which, device, dtype, args.quantize)
    name = args.model_name or os.path.basename(os.path.normpath(args.checkpoint))
    server, _ = make_server(generator, args.host, args.port, name, args.api_key, args.max_batch, args.max_queue,
                            args.max_body_kb, args.max_n, args.quiet, not args.free_calls)
    host, port = server.server_address[:2]
    print(f"serving {generator.checkpoint} as '{name}' ({device}, {str(dtype).replace('torch.', '')}, {threads}); "
          f"up to {args.max_batch} sequences decoded together")
    print(f"chat page: http://{host}:{port}/   API: http://{host}:{port}/v1   (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
