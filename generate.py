"""
Generate text from any run directory: greedy, sampling (temperature, top-k, top-p, repetition penalty),
beam search, stop strings, batches of prompts of different lengths, streaming, and an interactive chat.

    python generate.py --checkpoint checkpoints/pretrain_tiny --prompt "Once upon a time" --max-new-tokens 60
    python generate.py --checkpoint checkpoints/sft_tiny --chat
    python generate.py --checkpoint checkpoints/grpo_tool --prompt "What is 478 plus 356?" --tools calculator --greedy

Decoding uses the KV cache: the prompt is run once (prefill), then each step feeds one token, so a step costs
one token's worth of compute instead of re-reading the whole sequence. With --tools a call the model writes runs at the
end of its turn, and the tool's reply is fed through the same cache (generate_with_tools).
"""
import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from builtin_data import check_answer
from common import cli, keep_freed_memory, resolve_device, warn_slow_cpu_bf16
from model import KVCache, compute_dtype, load_model, quantize_int8
from tokenizer import BPETokenizer
from tools import AVAILABLE, parse_assistant, run_tool_call, tool_turn_ids


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    greedy: bool = False           # argmax at each step (ignores temperature/top-k/top-p)
    temperature: float = 1.0
    top_k: int = 0                 # keep the k most likely tokens (0: all)
    top_p: float = 1.0             # keep the smallest set whose probability reaches p (1: all)
    repetition_penalty: float = 1.0  # >1 discourages tokens already in the sequence (CTRL-style)
    num_beams: int = 1             # >1: beam search (deterministic)
    length_penalty: float = 1.0    # beam score = sum logprob / length ** length_penalty
    stop_strings: list = field(default_factory=list)
    stop_on_eos: bool = True
    seed: int = None               # reproducible sampling

    def __post_init__(self):
        rules = {"max_new_tokens": (self.max_new_tokens >= 0, "at least 0"), "temperature": (self.temperature >= 0, "at least 0"),
                 "top_k": (self.top_k >= 0, "at least 0"), "top_p": (0 < self.top_p <= 1, "in (0, 1]"),
                 "repetition_penalty": (self.repetition_penalty > 0, "above 0"), "num_beams": (self.num_beams >= 1, "at least 1"),
                 "stop_strings": (all(self.stop_strings), "non-empty strings (an empty one stops at once)")}
        for name, (ok, rule) in rules.items():
            if not ok:
                raise ValueError(f"generation: {name} must be {rule}, got {getattr(self, name)}")


def keep_to_offered(scores, constraint, text):
    """scores (..., V) with every token that tools.CallConstraint.allowed(text) leaves out at -inf; unchanged where it
    gives None (outside a call's name and argument names). generate_with_tools and serve.py call it."""
    allowed = constraint.allowed(text)
    if not allowed:
        return scores
    kept = torch.full_like(scores, float("-inf"))
    kept[..., allowed] = scores[..., allowed]
    return kept


def process_logits(logits, cfg, seen=None):
    """Apply repetition penalty, temperature, top-k and top-p to next-token logits (B, V)."""
    logits = logits.float()
    if cfg.repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(logits > 0, logits / cfg.repetition_penalty, logits * cfg.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if cfg.greedy:
        return logits
    logits = logits / max(cfg.temperature, 1e-5)
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        remove = probs.cumsum(-1) - probs > cfg.top_p  # tokens after the nucleus is already full (the top one stays)
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def sample_from(probs, generator=None, u=None):
    """One token per row of probs (B, V), drawn by inverting the row's cumulative distribution at one uniform number:
    exact, and on CPU ~30x faster than torch.multinomial, which draws an exponential per vocabulary entry (64 rows of
    2,048: 2 ms -> 65 us a step, a third of GRPO's sampling time). Never picks a token of probability 0.
    u (B, 1): the uniform numbers, drawn by the caller (a compiled step cannot draw from a torch.Generator)."""
    cdf = probs.float().cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device) if u is None else u
    u = u * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True).squeeze(1)  # the first token whose cdf exceeds u
    return torch.where(index < probs.shape[1], index, probs.argmax(-1))  # u rounded up to the total: the likeliest


class TextGenerator:
    def __init__(self, model, tokenizer, compile=False, freeze=True):
        """model: a MiniGPT in the dtype to decode in. For speed on CPU cast a copy to bf16 once
        (load_generator(..., dtype=torch.bfloat16)): decoding reads every weight per token, so half the bytes is
        ~2x the tokens/s, where autocast would re-cast the fp32 weights at every step; int8 weights
        (quantize_int8) halve them again. compile=True runs each decode step through torch.compile; freeze=False
        for a model that goes on training between generations (RL), whose compiled step reads the current weights."""
        self.model, self.tokenizer = model.eval(), tokenizer
        self.warned = False  # whether a prompt and max_new_tokens have overflowed max_seq_len yet (see _prefill)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        # compile=True: one decode step (model.decode_step, a static cache: the same shapes at every step but the number
        # of filled slots it reads, a symbolic size) is compiled once per batch size (5-15 s); the prompt runs eagerly.
        # Fusing the step's ~400 small ops, its one-row matmuls and its attention into passes over memory gives 2-3x the
        # tokens/s (bench/bench_decode.py).
        # freezing bakes the weights into the graph as constants (a model done training); cpp_wrapper calls the
        # kernels from C++ instead of Python. (Skipping dynamo's guards on the modules saved ~0.05 ms a step but let a
        # second model of the same class run the first one's graph: KeyError with int8 after bf16.)
        options = {"freezing": freeze, "cpp_wrapper": True}
        self.step = torch.compile(self._step_and_pick, dynamic=False, options=options) if compile else None
        # the compiled step also picks the next token (argmax, or temperature + sample_from at the caller's uniform
        # numbers) where the settings need nothing else, so the logits never go through ~10 eager ops a step
        self.pick_in_step = True
        self.step_ran = False  # whether the compiled step has run once (compiled fine)
        # serve.py's continuous batching changes the batch and the cache at every step: it calls the whole model,
        # compiled with dynamic shapes (dynamic=True: one graph for every cache length instead of one per step)
        self.forward = torch.compile(model, dynamic=True, options=options) if compile else model

    def _prefill(self, prompts, max_new):
        """Left-pad prompts into one batch, build a cache, run the prompt once; returns (cache, last logits, max_new)."""
        max_len, longest, asked = self.model.config.max_seq_len, max(len(p) for p in prompts), max_new
        prompts = [p[-(max_len - 1):] if len(p) >= max_len else p for p in prompts]  # keep the most recent context
        L = max(len(p) for p in prompts)
        max_new = max(0, min(max_new, max_len - L))
        if (L < longest or max_new < asked) and not self.warned:  # the cache holds max_seq_len positions
            self.warned = True  # once per generator: PPO makes thousands of rollouts with one
            kept = f"kept the last {L} prompt tokens, " if L < longest else ""
            print(f"warning: a {longest}-token prompt and {asked} new tokens exceed max_seq_len {max_len}: "
                  f"{kept}generating at most {max_new}", file=sys.stderr)
        # rows with the same prompt (GRPO's answers to one question, beam search's beams) share one prefill: each
        # distinct prompt runs once and its keys/values are copied to its rows (the tool chain's 64 rows are 8
        # questions after a ~100-token tool list: 8x less prefill)
        distinct = {}
        rows = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        prompts = [list(p) for p in distinct]
        pad_lens = torch.tensor([L - len(p) for p in prompts], device=self.device)
        idx = torch.tensor([[self.tokenizer.pad_id] * (L - len(p)) + p for p in prompts], device=self.device)
        # the cache in the dtype the keys are computed in (bf16 under autocast or for a bf16 model: no rounding), except
        # eagerly on CPU, where fp32 attention over an fp32 cache is ~4x faster for one new token than bf16's bmm
        eager_cpu = self.device.type == "cpu" and self.step is None
        cache_dtype = torch.float32 if eager_cpu else compute_dtype(next(self.model.parameters()))
        slots = L + max_new
        if self.step is not None:  # the compiled step's cache: a power of two, so that one graph serves many calls, and
            # one spare slot: the slots a step reads (a symbolic size) then never equal the whole cache, where the
            # compiler would specialise a second graph to that size
            slots = min(max_len, 2 ** math.ceil(math.log2(slots))) + 1
        cache = KVCache(self.model.config, len(prompts), slots, self.device, cache_dtype, pad_lens)
        logits = self.model(idx, cache=cache, last_logits_only=True).logits[:, -1]
        if len(prompts) < len(rows):
            index = torch.tensor(rows, device=self.device)
            cache.reorder(index)
            logits = logits[index]
        return cache, logits, max_new

    def _step_and_pick(self, token, cache, position, slots, u=None, temperature=None):
        """The step torch.compile compiles: model.decode_step's logits (B, V), and the next token picked from them,
        the argmax (u None) or drawn at temperature with sample_from at the uniform numbers u (B, 1)."""
        logits = self.model.decode_step(token, cache, position, slots)
        if u is None:
            return logits, logits.argmax(-1)
        return logits, sample_from((logits.float() / temperature).softmax(-1), u=u)

    def _seen(self, prompts, V, cfg):
        """(B, V) bool: the tokens each row holds, for the repetition penalty; None without one (nothing to track)."""
        if cfg.repetition_penalty == 1.0:
            return None
        seen = torch.zeros(len(prompts), V, dtype=torch.bool, device=self.device)
        for i, p in enumerate(prompts):
            seen[i, p] = True
        return seen

    @staticmethod
    def _pick(logits, cfg, seen, generator):
        """The next token (B,) from logits (B, V) as cfg says (the eager way, any settings)."""
        return TextGenerator._choose(process_logits(logits, cfg, seen), cfg, generator)

    @staticmethod
    def _choose(scores, cfg, generator):
        """The next token (B,) from processed scores (B, V): the argmax, or drawn from their softmax."""
        return scores.argmax(-1) if cfg.greedy else sample_from(scores.softmax(-1), generator)

    def _decode(self, token, cache, cfg=None, generator=None):
        """Feed one token per row, token (B,), through the cache. Returns (next-token logits (B, V), the next token
        (B,) picked as cfg says, or None where the caller must pick it: no cfg, or settings the compiled step does not
        take (top-k, top-p, repetition penalty))."""
        if self.step is not None:
            try:
                # the attention reads the filled slots only; their number, a size marked dynamic, is symbolic in the
                # one graph (reading all 256 slots of the cache was half of each 64-row decode step in GRPO)
                slots = torch.arange(cache.pos + 1, device=self.device)
                torch._dynamo.maybe_mark_dynamic(slots, 0)  # (maybe_: a size it must specialise gets its own graph)
                plain = cfg is not None and self.pick_in_step and cfg.top_k == 0 and cfg.top_p == 1 and cfg.repetition_penalty == 1
                u = None if not plain or cfg.greedy else \
                    torch.rand(token.shape[0], 1, generator=generator, device=self.device)  # sample_from's draw, same order
                temperature = torch.tensor(max(cfg.temperature, 1e-5), device=self.device) if u is not None else None
                logits, picked = self.step(token, cache, torch.tensor([cache.pos], device=self.device), slots, u, temperature)
                cache.pos, self.step_ran = cache.pos + 1, True
                return logits, picked if plain else None
            except Exception as e:  # no C++ compiler, an op the compiler cannot take...: go on without it
                if self.step_ran:
                    raise  # it compiled and ran before: this is not a compile failure
                print(f"warning: torch.compile failed, decoding without it ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})", file=sys.stderr)
                self.step = None
        return self.model(token[:, None], cache=cache, last_logits_only=True).logits[:, -1], None

    @torch.no_grad()
    def stream_ids(self, prompts, cfg):
        """Yield the next token of every row, (B,) per step, until all rows stop or max_new_tokens."""
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed) if cfg.seed is not None else None
        cache, logits, max_new = self._prefill(prompts, cfg.max_new_tokens)
        B, V = logits.shape
        seen = self._seen(prompts, V, cfg)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        next_token = self._pick(logits, cfg, seen, generator)
        for step in range(max_new):
            next_token = torch.where(done, torch.full_like(next_token, self.tokenizer.pad_id), next_token)
            if seen is not None:
                seen[torch.arange(B), next_token] = True
            yield next_token
            if cfg.stop_on_eos:
                done |= next_token == self.tokenizer.eos_id
            if bool(done.all()) or step == max_new - 1:
                return
            logits, next_token = self._decode(next_token, cache, cfg, generator)  # compiled, it picks the next token too
            if next_token is None:
                next_token = self._pick(logits, cfg, seen, generator)

    @staticmethod
    def _cut_at_stop(text, cfg):
        """(text up to the first stop string, whether one was found)."""
        cuts = [text.index(s) for s in cfg.stop_strings if s in text]
        return (text[:min(cuts)], True) if cuts else (text, False)

    def _finish(self, ids, cfg):
        """Cut a row's new tokens at EOS, decode, and cut the text at the first stop string."""
        if cfg.stop_on_eos and self.tokenizer.eos_id in ids:
            ids = ids[:ids.index(self.tokenizer.eos_id)]
        return self._cut_at_stop(self.tokenizer.decode(ids), cfg)[0]

    def generate_ids(self, prompts, cfg):
        """New token ids for each prompt (a list of id lists of any lengths)."""
        if not prompts:
            return []  # (a batch of none: max() over the prompt lengths had nothing to take)
        if cfg.num_beams > 1:
            return [self.beam_search(p, cfg) for p in prompts]
        rows = [[] for _ in prompts]
        stop_len = max((len(s) for s in cfg.stop_strings), default=0)
        stopped = [False] * len(prompts)
        for tokens in self.stream_ids(prompts, cfg):
            for i, t in enumerate(tokens.tolist()):
                if not stopped[i]:
                    rows[i].append(t)
                    # a stop string can only be completed by the newest tokens: check the decoded tail
                    if stop_len and any(s in self.tokenizer.decode(rows[i][-stop_len - 4:]) for s in cfg.stop_strings):
                        stopped[i] = True
            if all(stopped):
                break
        return rows

    def generate(self, prompts, cfg=None, chat=False):
        """Continuations of a prompt string or a list of them (chat=True wraps each as a user message)."""
        cfg = cfg or GenerationConfig()
        single = isinstance(prompts, str)
        prompts = [prompts] if single else list(prompts)
        ids = [self.encode_prompt(p, chat) for p in prompts]
        out = [self._finish(r, cfg) for r in self.generate_ids(ids, cfg)]
        return out[0] if single else out

    def encode_prompt(self, prompt, chat=False):
        if isinstance(prompt, list):  # a list of messages
            return self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True)[0]
        if chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)[0]
        return [self.tokenizer.bos_id] + self.tokenizer.encode(prompt)  # documents were trained as <|im_start|> text

    def stream(self, prompt, cfg=None, chat=False):
        """Yield the continuation piece by piece as it is generated (for one prompt)."""
        cfg = cfg or GenerationConfig()
        ids, printed = [], ""
        for tokens in self.stream_ids([self.encode_prompt(prompt, chat)], cfg):
            t = int(tokens[0])
            if cfg.stop_on_eos and t == self.tokenizer.eos_id:
                break
            ids.append(t)
            text, stopped = self._cut_at_stop(self.tokenizer.decode(ids), cfg)
            if stopped:
                yield text[len(printed):]
                return
            if text.endswith("\ufffd"):
                continue  # half a UTF-8 character: wait for the rest
            yield text[len(printed):]
            printed = text

    @torch.no_grad()
    def generate_with_tools(self, prompts, cfg, max_tool_calls=4, tool_room=64, run_call=None, constraints=None):
        """Generate with tool calls run inside the loop: when a row ends a turn (<|im_end|>) that holds <tool_call>s and
        has calls left, the tools run (tools.run_tool_call) and their turn (tools.tool_turn_ids: the tool messages and
        the next assistant header) is fed to the model through the same KV cache, one token per step in step with the
        other rows, and generation goes on. Returns (rows of new token ids, rows of 1 = generated by the model /
        0 = the tools' tokens, rows of [(call, result, ok)]). max_new_tokens counts the model's tokens only;
        tool_room: cache room kept per call for the tools' tokens. run_call(row, call) -> (result, ok): the tools of
        each row (default: tools.run_tool_call, the project's calculator). constraints: one tools.CallConstraint (or
        None) per row: a call's name and argument names are kept to that row's offered tools (values are free)."""
        run_call = run_call or (lambda row, call: run_tool_call(call))
        call_id = self.tokenizer.special_tokens.get("<tool_call>")
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed) if cfg.seed is not None else None
        cache, logits, room = self._prefill(prompts, cfg.max_new_tokens + max_tool_calls * tool_room)
        B, V = logits.shape
        eos, pad = self.tokenizer.eos_id, self.tokenizer.pad_id
        seen = self._seen(prompts, V, cfg)
        rows, by_model, calls = [[] for _ in prompts], [[] for _ in prompts], [[] for _ in prompts]
        queued = [[] for _ in prompts]  # the tools' tokens still to feed, per row
        turn_start, written, done = [0] * B, [0] * B, [False] * B
        picked = None  # the next tokens when the compiled step picked them
        for _ in range(room):
            if picked is None:
                scores = process_logits(logits, cfg, seen)
                for i in range(B):  # a constraint is consulted only once the row's turn holds <tool_call>
                    turn = rows[i][turn_start[i]:]
                    if constraints and constraints[i] and not queued[i] and not done[i] and call_id in turn:
                        scores[i] = keep_to_offered(scores[i], constraints[i], self.tokenizer.decode(turn))
                picked = self._choose(scores, cfg, generator)
            sampled = picked.tolist()
            tokens = []
            for i in range(B):
                if done[i]:
                    tokens.append(pad)
                elif queued[i]:  # the tools' turn, fed like a prompt
                    tokens.append(queued[i].pop(0))
                    rows[i].append(tokens[-1])
                    by_model[i].append(0)
                    turn_start[i] = len(rows[i])
                else:
                    tokens.append(sampled[i])
                    rows[i].append(sampled[i])
                    by_model[i].append(1)
                    written[i] += 1
                    if sampled[i] == eos:
                        parsed = parse_assistant(self.tokenizer.decode(rows[i][turn_start[i]:]))
                        if parsed["tool_calls"] and len(calls[i]) < max_tool_calls:
                            results = [run_call(i, c) for c in parsed["tool_calls"]]
                            calls[i] += [(c, r, ok) for c, (r, ok) in zip(parsed["tool_calls"], results)]
                            queued[i] = tool_turn_ids(self.tokenizer, [r for r, _ in results])
                        else:
                            done[i] = True
                    elif written[i] >= cfg.max_new_tokens:
                        done[i] = True
            if all(done):
                break
            next_token = torch.tensor(tokens, device=self.device)
            if seen is not None:
                seen[torch.arange(B), next_token] = True
            # constraints are applied to the logits here, in Python: then the compiled step only decodes
            logits, picked = self._decode(next_token, cache, None if constraints else cfg, generator)
        return rows, by_model, calls

    @torch.no_grad()
    def beam_search(self, prompt, cfg):
        """Best sequence of new tokens by beam search; score = sum of log-probs / length ** length_penalty."""
        k, eos = cfg.num_beams, self.tokenizer.eos_id
        cache, logits, max_new = self._prefill([prompt] * k, cfg.max_new_tokens)
        beams = [[] for _ in range(k)]
        scores = torch.zeros(k, device=self.device)
        scores[1:] = float("-inf")  # all beams start identical: expand only the first at step one
        finished = []  # (normalised score, tokens)
        for step in range(max_new):
            logprobs = F.log_softmax(logits.float(), dim=-1) + scores[:, None]  # (k, V)
            top, flat = logprobs.view(-1).topk(2 * k)
            new_beams, new_scores, rows = [], [], []
            for score, f in zip(top.tolist(), flat.tolist()):
                beam, token = divmod(f, logits.size(-1))
                if token == eos and cfg.stop_on_eos:
                    finished.append((score / (len(beams[beam]) + 1) ** cfg.length_penalty, beams[beam]))
                else:
                    new_beams.append(beams[beam] + [token])
                    new_scores.append(score)
                    rows.append(beam)
                if len(new_beams) == k:
                    break
            best_live = max(new_scores) / (step + 1) ** cfg.length_penalty if new_scores else float("-inf")
            if len(finished) >= k and max(f[0] for f in finished) >= best_live:
                break
            if not new_beams:
                break
            cache.reorder(torch.tensor(rows, device=self.device))
            beams, scores = new_beams, torch.tensor(new_scores, device=self.device)
            last = torch.tensor([b[-1] for b in beams], device=self.device)
            logits, _ = self._decode(last, cache)
        else:
            finished += [(s / max(1, len(b)) ** cfg.length_penalty, b) for s, b in zip(scores.tolist(), beams)]
        return max(finished, key=lambda f: f[0])[1] if finished else []


@torch.no_grad()
def answer_accuracy(generator, suite, max_new_tokens=48, batch_size=64):
    """Greedy chat answers to [(prompt, expected)]: (fraction that contain the expected answer, [((prompt, expected),
    answer)]). The regression suite of SFT, DPO and PPO."""
    answers = []
    cfg = GenerationConfig(greedy=True, max_new_tokens=max_new_tokens)
    for i in range(0, len(suite), batch_size):
        answers += generator.generate([p for p, _ in suite[i:i + batch_size]], cfg, chat=True)
    passed = [check_answer(a, expected) for a, (_, expected) in zip(answers, suite)]
    return sum(passed) / max(1, len(passed)), list(zip(suite, answers))


def load_generator(run_dir, device="cpu", dtype=torch.float32, quantize=None, compile=False, which="best"):
    """Model (cast to dtype; quantize="int8" for int8 weights) and tokenizer from a run directory, as a TextGenerator.
    which: "best" (ckpt_best.pt, the best eval after training began) or "latest" (ckpt_latest.pt, the last save)."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir}: checkpoint directory not found")
    model = load_model(run_dir, device, which)
    if quantize == "int8":
        quantize_int8(model)  # from the fp32 weights, before any cast
    model = model.to(dtype)
    tokenizer = BPETokenizer.load(os.path.join(run_dir, "tokenizer.json"))
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"{run_dir}: tokenizer has {tokenizer.vocab_size} tokens but the model only {model.config.vocab_size}")
    generator = TextGenerator(model, tokenizer, compile)
    generator.checkpoint = model.checkpoint
    return generator


def show_turns(text, calls):
    """A completion with tool turns, for people: each turn's reasoning, tool calls with their results, and answer."""
    lines, results = [], iter(calls)
    for turn in text.split("<|im_start|>assistant\n"):
        parsed = parse_assistant(turn)
        if parsed["reasoning_content"]:
            lines.append("thinking: " + parsed["reasoning_content"].replace("\n", "\n          "))
        for call in parsed["tool_calls"]:
            _, result, _ = next(results, (None, "(not run: --max-tool-calls reached)", False))
            lines.append(f"tool call: {call['name']}({call['arguments']}) -> {result}")
        if parsed["content"] or not parsed["tool_calls"]:
            lines.append(f"assistant: {parsed['content']}")
    return "\n".join(lines)


def chat_tuned(run_dir):
    """False when config.json says the run is pretraining only: such a model continues text, it does not answer."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            return json.load(f).get("stage") != "pretrain"
    except (OSError, ValueError, AttributeError):
        return True  # nothing says otherwise (an imported model, say)


def main():
    p = argparse.ArgumentParser(description="Generate text from a run directory.")
    p.add_argument("--checkpoint", required=True, help="run directory (config.json, tokenizer.json, ckpt_*.pt)")
    p.add_argument("--which", default="best", choices=["best", "latest"],
                   help="ckpt_best.pt (the best eval after training began) or ckpt_latest.pt (the last save)")
    p.add_argument("--prompt", nargs="+", default=["Once upon a time"], help="one or more prompts (one batch)")
    p.add_argument("--chat", action="store_true", help="interactive multi-turn chat with the chat template")
    p.add_argument("--template", action="store_true", help="wrap --prompt as a user message (chat template)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--stop", nargs="*", default=[], help="stop strings")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda, else mps on a Mac, else cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="default float32, or bfloat16 with --quantize int8; bfloat16: ~2x faster on CPU")
    p.add_argument("--quantize", default=None, choices=["int8"], help="int8 weights: ~2x faster again than bf16 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (5-15 s once, 2.5-3x the tokens/s on CPU after)")
    p.add_argument("--no-stream", action="store_true", help="print each continuation when complete")
    p.add_argument("--tools", nargs="+", default=[], choices=sorted(AVAILABLE),
                   help="answer each --prompt as a chat with these tools: their calls run inside the generation loop")
    p.add_argument("--max-tool-calls", type=int, default=4, help="tool calls per answer, at most")
    p.add_argument("--no-thinking", action="store_true", help="chat: skip the reasoning (an empty <think> block)")
    args = p.parse_args()
    args.device = resolve_device(args.device)
    keep_freed_memory(args.device)  # each decode step's freed activations are reused, not faulted in again: int8 ~10% faster
    dtype = args.dtype or ("bfloat16" if args.quantize == "int8" else "float32")  # the int8 kernel is fast for bf16
    if not args.quantize:  # int8 weights with bf16 activations have their own kernel: fast on AVX2 too
        warn_slow_cpu_bf16(getattr(torch, dtype), args.device)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, greedy=args.greedy, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                           num_beams=args.num_beams, length_penalty=args.length_penalty, stop_strings=args.stop,
                           seed=args.seed)  # checks the flags before the model loads
    gen = load_generator(args.checkpoint, args.device, getattr(torch, dtype), args.quantize, args.compile, args.which)
    print(f"loaded {gen.checkpoint}", file=sys.stderr)  # stderr: stdout is only the generated text
    if (args.chat or args.template) and not chat_tuned(args.checkpoint):
        print(f"note: {args.checkpoint} is a pretraining run, never chat-tuned: it continues the chat template's text "
              f"rather than answering (train_sft.py --init-from {args.checkpoint} makes a chat model)", file=sys.stderr)
    if args.tools or args.no_thinking:  # chat answers with their reasoning and tool calls shown
        tools = [AVAILABLE[name] for name in args.tools] or None
        for prompt in args.prompt:
            ids = gen.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                   tools=tools, enable_thinking=not args.no_thinking)[0]
            rows, _, calls = gen.generate_with_tools([ids], cfg, args.max_tool_calls if tools else 0)
            print(f"user: {prompt}")
            print(show_turns(gen.tokenizer.decode(rows[0]), calls[0]))
    elif args.chat:
        messages = []
        print("chat: type a message, 'exit' to quit, '/reset' to start over")
        while True:
            try:
                user = input("you> ").strip()
            except EOFError:
                break
            if user in ("exit", "quit"):
                break
            if user == "/reset":
                messages = []
                continue
            messages.append({"role": "user", "content": user})
            print("assistant> ", end="", flush=True)
            reply = ""
            for piece in gen.stream(messages, cfg):
                reply += piece
                print(piece, end="", flush=True)
            print()
            messages.append({"role": "assistant", "content": reply})
    elif len(args.prompt) == 1 and args.num_beams == 1 and not args.no_stream:
        for piece in gen.stream(args.prompt[0], cfg, chat=args.template):
            print(piece, end="", flush=True)
        print()
    else:
        for text in gen.generate(args.prompt, cfg, chat=args.template):
            print(text)


if __name__ == "__main__":
    cli(main)
