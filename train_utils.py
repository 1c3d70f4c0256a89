"""
What every training script needs identically, written once: common flags, DDP and AMP setup, the lr schedule, atomic
checkpoints and exact resume, the run directory's files, metrics, memory and loss plots. Device, precision, threads
and one-line errors are common.py's (inference scripts use them without this module); reading data is data.py's.
The training loop itself is not here: each train_*.py shows its own, top to bottom.
"""
import argparse
import contextlib
import json
import math
import operator
import os
import random
import resource
import shutil
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from common import cli as common_cli
from common import (cpu_threads, duration, env_default, keep_freed_memory, mps_available, read_json,  # noqa: F401
                    resolve_device, resolve_dtype, save_checkpoint, write_json)
from model import MiniGPT, MiniGPTConfig, add_lora, get_config, hf_folder_message, load_checkpoint, load_weights
from tokenizer import BPETokenizer


# ----------------------------------------------------------------------------- flags

def common_parser(description, stage, **defaults):
    """The flags every stage shares; a script adds its own and sets its defaults (lr, steps, ...)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--config", default="tiny", help="model preset (model.py PRESETS)")
    a("--model-override", nargs="+", default=[], metavar="KEY=VALUE",
      help="change preset fields, e.g. --model-override dim=256 n_layers=6 dropout=0.1")
    a("--data", nargs="+", default=["builtin"], help="files as path[:ratio[:max_samples]], or 'builtin'")
    a("--val-data", nargs="+", default=None, help="explicit validation files (otherwise --val-split of --data)")
    a("--format", default=None, help="force the file format (see data.py), instead of detecting it per file")
    a("--skip-bad-lines", action="store_true", help="count and list bad records in dataset_stats.json instead of stopping")
    a("--val-split", type=float, default=env_default("MINIGPT_VAL_SPLIT", 0.05, float))
    a("--global-sample-ratio", type=float, default=env_default("MINIGPT_GLOBAL_SAMPLE_RATIO", 1.0, float))
    a("--max-data-size", type=int, default=None, help="use at most this many training records in total")
    a("--out-dir", default=None, help=f"run directory (default checkpoints/{stage}_<config>)")
    a("--overwrite", action="store_true", help="replace the run already in --out-dir (without it, a folder that "
      "holds a run is refused: continue it with --resume, or pass another --out-dir)")
    a("--init-from", default=None, help="start from the weights of this run directory")
    a("--resume", nargs="?", const="latest", default=None,
      help="resume from a checkpoint file, or with no value from ckpt_latest.pt in --out-dir")
    a("--max-steps", type=int, default=1000)
    a("--time-budget", type=float, default=None, help="stop the loop after this many seconds (then eval and save)")
    a("--lr-decay-steps", type=int, default=None,
      help="cosine reaches min-lr here (default: max-steps; train_pretrain.py: 2 x max-steps), as in nanoGPT")
    a("--batch-size", type=int, default=32, help="micro-batch size (sequences)")
    a("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    a("--seq-len", type=int, default=256)
    a("--lr", type=float, default=1e-3)
    a("--min-lr", type=float, default=None, help="cosine floor (default lr/10)")
    a("--warmup-steps", type=int, default=50)
    a("--weight-decay", type=float, default=0.1)
    a("--grad-clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    a("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
      help="autocast dtype; auto = bf16 where the hardware has it, else fp32 (fp16 uses a GradScaler on CUDA)")
    a("--device", default="auto", help="cpu, cuda, cuda:1, mps (Apple GPU), or auto: cuda, else mps, else cpu")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--eval-interval", type=int, default=100)
    a("--eval-iters", type=int, default=20, help="validation batches per eval")
    a("--log-interval", type=int, default=10)
    a("--save-interval", type=int, default=0, help="also save ckpt_latest.pt every N steps (0: at evals only)")
    a("--early-stop-patience", type=int, default=0, help="stop after N evals without improvement (0: never)")
    a("--early-stop-delta", type=float, default=0.0, help="val loss must improve by more than this")
    a("--max-bad-steps", type=int, default=5, help="stop after this many non-finite losses in a row")
    a("--seed", type=int, default=env_default("MINIGPT_TRAIN_SEED", 1337, int))
    a("--num-threads", type=int, default=None, help="torch CPU threads (default: one per physical core)")
    a("--max-cpu", type=float, default=100, help="use at most this percent of the CPU cores (threads), so a laptop "
      "stays usable while it trains")
    a("--max-memory", type=float, default=90, help="save and stop when the system's memory in use passes this percent "
      "of the total (0: never); checked after every step")
    a("--no-plot", action="store_true")
    a("--tensorboard", action="store_true", help="also write TensorBoard events (needs the tensorboard package)")
    a("--inspect", action="store_true", help="print the first batch, run one step, print gradient norms, exit")
    p.set_defaults(**defaults)
    return p


LORA_LR_SCALE = 4  # adapters start at zero and hold ~8% of the weights: at SFT's lr, LoRA reached 0.31 held out, at 4x 0.56


def add_lora_flags(p):
    """LoRA on a fine-tuning stage (SFT, DPO): --lora-rank 0 (the default) trains every weight."""
    full_lr = p.get_default("lr")
    p.set_defaults(lr=None, full_model_lr=full_lr)  # finish_args picks full_lr, or LORA_LR_SCALE x it with --lora-rank
    p.add_argument("--lora-rank", type=int, default=0, help="train low-rank adapters of this rank instead of every "
                   f"weight (0: full fine-tuning); the checkpoint keeps only the adapters; the default --lr is then "
                   f"{LORA_LR_SCALE * full_lr:g} instead of {full_lr:g}")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="adapter scale: updates are multiplied by alpha / rank")
    p.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the adapters' input")
    p.add_argument("--lora-targets", default="q,k,v,o,gate,up,down",
                   help="comma-separated Linears that get adapters: q, k, v, o (attention), gate, up, down (MLP)")


def check_lora_flags(args):
    """The LoRA flags' bounds, for the stages that have them (one-line errors before anything runs)."""
    check_flags(args, at_least=dict(lora_rank=0, lora_dropout=0), above=dict(lora_alpha=0), below=dict(lora_dropout=1))


def apply_lora(model, args, run):
    """With --lora-rank: freeze the model, add adapters, and say how much of it trains."""
    if not args.lora_rank:
        return model
    add_lora(model, args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_targets.split(","))
    if run.master:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        print(f"LoRA rank {args.lora_rank}, alpha {args.lora_alpha:g} on {args.lora_targets}: {trainable:,} trainable "
              f"parameters, {100 * trainable / total:.1f}% of {total:,}; the base model is frozen")
    return model


def check_flags(args, at_least=None, above=None, at_most=None, below=None):
    """Bounds of numeric flags, e.g. at_least={"batch_size": 1}, below={"val_split": 1}: the first flag out of its
    bounds is a one-line error before anything runs (--grad-accum 0 once trained nothing and reported done). An
    optional flag left unset (None) is not checked."""
    for words, holds, bounds in (("at least", operator.ge, at_least), ("above", operator.gt, above),
                                 ("at most", operator.le, at_most), ("below", operator.lt, below)):
        for name, bound in (bounds or {}).items():
            if getattr(args, name) is not None and not holds(getattr(args, name), bound):
                raise ValueError(f"--{name.replace('_', '-')} must be {words} {bound}, got {getattr(args, name)}")


def finish_args(args, stage):
    check_flags(args, at_least=dict(batch_size=1, grad_accum=1, seq_len=2, max_steps=0, warmup_steps=0, eval_interval=1,
                                    eval_iters=1, log_interval=1, save_interval=0, early_stop_patience=0, max_bad_steps=1,
                                    weight_decay=0, grad_clip=0, early_stop_delta=0, val_split=0, num_threads=1,
                                    lr_decay_steps=1, max_data_size=1, min_lr=0, max_memory=0),
                above=dict(lr=0, global_sample_ratio=0, time_budget=0, max_cpu=0),
                at_most=dict(global_sample_ratio=1, max_cpu=100, max_memory=100),
                below=dict(val_split=1))
    args.stage = stage
    if args.lr is None:  # a LoRA stage's default (add_lora_flags)
        args.lr = args.full_model_lr * (LORA_LR_SCALE if args.lora_rank else 1)
    if args.out_dir is None:
        args.out_dir = os.path.join("checkpoints", f"{stage}_{args.config}")
    if args.min_lr is None:
        args.min_lr = args.lr / 10
    if args.lr_decay_steps is None:
        args.lr_decay_steps = args.max_steps
    return args


BOOL_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def model_config(args, vocab_size):
    """The preset named by --config, with --model-override fields, the tokenizer's vocab and room for --seq-len."""
    preset = get_config(args.config)
    overrides = {}
    types = {f: type(v) for f, v in preset.to_dict().items()}
    for item in args.model_override:
        key, _, value = item.partition("=")
        if key not in types or not value:
            raise ValueError(f"--model-override {item}: expected KEY=VALUE with KEY one of {', '.join(types)}")
        cast = types[key] if types[key] is not type(None) else int
        try:
            overrides[key] = BOOL_WORDS[value.lower()] if cast is bool else cast(value)
        except (KeyError, ValueError):
            kind = {bool: "true or false", int: "an integer", float: "a number"}[cast]
            raise ValueError(f"--model-override {item}: {key} takes {kind}") from None
    fields = {**preset.to_dict(), **overrides, "vocab_size": vocab_size}
    if "ffn_hidden" not in overrides and "dim" in overrides:
        fields["ffn_hidden"] = None  # re-derive from the new dim
    fields["max_seq_len"] = max(fields["max_seq_len"], args.seq_len)
    return MiniGPTConfig(**fields)


# ----------------------------------------------------------------------------- setup

class Run:
    """Device, precision and process-group facts for one run (plain attributes, no behaviour)."""


def setup(args):
    run = Run()
    run.ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1  # launched by torchrun
    run.local_rank = int(os.environ.get("LOCAL_RANK", 0)) if run.ddp else 0
    args.device = resolve_device(args.device, run.local_rank)
    run.device = torch.device(args.device)
    if run.ddp and run.device.type == "mps":  # torch has no process-group backend for Apple GPUs
        raise ValueError("torchrun with --device mps: DDP does not run on Apple GPUs (no collective backend for MPS); "
                         "train in one process (python train_*.py), or pass --device cpu to torchrun")
    if run.ddp:
        dist.init_process_group("nccl" if run.device.type == "cuda" else "gloo")
        run.rank, run.world_size = dist.get_rank(), dist.get_world_size()
    else:
        run.rank, run.world_size = 0, 1
    run.master = run.rank == 0
    run.device_type = run.device.type
    if run.device_type == "cuda":
        torch.cuda.set_device(run.device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    threads = cpu_threads(args.num_threads, args.max_cpu)  # data loading and the optimizer run on the CPU under CUDA too
    keep_freed_memory(run.device)
    run.dtype = resolve_dtype(args.dtype, run.device_type)
    args.dtype = str(run.dtype).replace("torch.", "")
    if run.master:
        print(f"device {run.device}, {args.dtype}, {threads}"
              + (f", {run.world_size} processes" if run.ddp else ""))
        if run.device_type == "mps":  # the GPU shares the Mac's memory with everything else on it
            print("Apple GPU (mps): memory is shared with the system; if it runs short, halve --batch-size and double "
                  "--grad-accum (the same sequences per step)")
    # AMP: bf16 needs no loss scaling; fp16 on CUDA does (GradScaler)
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.dtype == torch.float16 and run.device_type == "cuda")
    seed_everything(args.seed + run.rank)
    return run


def autocast(run):
    if run.dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=run.device_type, dtype=run.dtype)


def seed_everything(seed):
    random.seed(seed)
    torch.manual_seed(seed)


def all_reduce_mean(value, run):
    """Average a float over DDP ranks (identity in a single process)."""
    if not run.ddp:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=run.device if run.device_type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.item() / run.world_size


def any_rank(flags, run):
    """[flag true on any rank] for a list of bools, in one all_reduce (MAX) under DDP: decisions every rank must share,
    such as stopping, or a rank that stopped alone would wait forever in the others' next collective.
    Example: rank 0 [False, True], rank 1 [False, False] -> [False, True] on both."""
    if not run.ddp:
        return [bool(f) for f in flags]
    t = torch.tensor([float(f) for f in flags], device=run.device if run.device_type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def from_master(value, run):
    """Rank 0's float on every rank (identity in a single process): a figure only rank 0 computed (the regression
    suite's pass rate) decides the best checkpoint on all of them. A collective: every rank must call it."""
    return all_reduce_mean(value * run.world_size if run.master else 0.0, run) if run.ddp else value


def standard_error(rate, n):
    """The standard error of an accuracy measured on n independent questions: sqrt(p (1 - p) / n). 71 questions at
    p = 0.5 give 0.059, so two runs 0.1 apart may differ by chance alone."""
    return math.sqrt(max(rate * (1 - rate), 0.0) / max(1, n))


# ----------------------------------------------------------------------------- schedule

def get_lr(step, args):
    """Linear warmup for warmup_steps, then cosine decay from lr to min_lr at lr_decay_steps."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    if step >= args.lr_decay_steps:
        return args.min_lr
    progress = (step - args.warmup_steps) / max(1, args.lr_decay_steps - args.warmup_steps)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (args.lr - args.min_lr)


# ----------------------------------------------------------------------------- run directory

RUN_FILES = ("ckpt_latest.pt", "ckpt_best.pt", "metrics.jsonl")  # what a run would lose if another replaced it
DONE_FILE = "done.json"  # written when a run ends by its own rule (not Ctrl+C): the Makefile reuses such a run
_CREATED_RUN_DIRS = []  # folders this process made; removed again if the run fails before its first checkpoint


def prepare_run_dir(args, run):
    """Make --out-dir for this run and return the config.json already there (a dict, or None). A folder that holds a
    run (a checkpoint or a metrics log) is continued only with --resume and replaced only with --overwrite: a new run
    there once replaced its checkpoints and cut its log without a word."""
    out = args.out_dir
    held = [n for n in RUN_FILES if os.path.isfile(os.path.join(out, n))]
    forked = args.resume not in (None, "latest") and \
        os.path.abspath(os.path.dirname(args.resume)) != os.path.abspath(out)  # --resume PATH from another folder
    if held and (not args.resume or forked) and not args.overwrite:
        raise ValueError(f"{out}: already holds a run ({', '.join(held)}); continue it with --resume, start a new "
                         f"one beside it with --out-dir NEW, or replace it with --overwrite")
    previous = read_json(os.path.join(out, "config.json"))
    if held and args.overwrite and run.master:
        for name in (*RUN_FILES, "config.json", "dataset_stats.json", DONE_FILE):
            if os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        for folder in ("plots", "tensorboard"):
            shutil.rmtree(os.path.join(out, folder), ignore_errors=True)
        print(f"--overwrite: removed the run that was in {out}")
    if run.master and not os.path.isdir(out):
        os.makedirs(out)
        _CREATED_RUN_DIRS.append(out)
    if run.master and args.resume and os.path.isfile(os.path.join(out, DONE_FILE)):
        os.remove(os.path.join(out, DONE_FILE))  # a resumed run is finished again only when it ends again
    if run.ddp:
        dist.barrier()  # the folder exists before any rank writes into it
    return previous


def remove_unfinished_run_dirs():
    """After a failed run: the folders it made that hold no checkpoint go (a typo in --data left empty run folders)."""
    for out in _CREATED_RUN_DIRS:
        if os.path.isdir(out) and not any(os.path.isfile(os.path.join(out, n)) for n in RUN_FILES[:2]):
            shutil.rmtree(out, ignore_errors=True)
    _CREATED_RUN_DIRS.clear()


def write_run_config(args, model_config, tokenizer, **tokenizer_facts):
    """config.json: the stage, every flag, the model config, and the tokenizer (with pretraining's `trained_on`)."""
    write_json(os.path.join(args.out_dir, "config.json"),
               {"stage": args.stage, "args": vars(args), "model": model_config.to_dict(),
                "tokenizer": {"vocab_size": tokenizer.vocab_size, "file": "tokenizer.json", **tokenizer_facts}})


def rng_state():
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if mps_available():  # dropout on the Apple GPU draws from its own generator
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and mps_available():
        torch.mps.set_rng_state(state["mps"])


CHAIN = {"sft": "pretrain", "reward": "sft", "dpo": "sft", "ppo": "sft"}  # each stage starts from this one's run


def has_checkpoint(run_dir):
    return any(os.path.isfile(os.path.join(run_dir, n)) for n in ("ckpt_best.pt", "ckpt_latest.pt"))


def default_init_from(args, previous_stage, command):
    """Later stages start from the previous stage's run directory (checkpoints/<previous>_<config> by default);
    when it is missing, the error names every command still to run, in order, and how long pretraining takes here."""
    if args.init_from is None:
        args.init_from = os.path.join("checkpoints", f"{previous_stage}_{args.config}")
    if message := hf_folder_message(args.init_from):
        raise ValueError(message)
    if has_checkpoint(args.init_from):
        return args.init_from
    way, stage = [], previous_stage  # the stages whose default run directories are missing, earliest first
    while stage and not (way and has_checkpoint(os.path.join("checkpoints", f"{stage}_{args.config}"))):
        way.insert(0, stage)
        stage = CHAIN.get(stage)
    steps = []
    for stage in way:
        took = f" (about {duration(estimate_pretrain_seconds(args.config))} here)" if stage == "pretrain" else ""
        steps.append(f"`python train_{stage}.py --config {args.config}`{took}")
    resume = ""
    if args.resume:  # there is no run of this stage to resume either: it has never started
        resume = f"--resume: {args.out_dir} holds no run to resume, and "
        steps.append(f"`python train_{args.stage}.py --config {args.config}` (without --resume)")
    raise FileNotFoundError(f"{resume}{args.init_from}: no checkpoint to start from; run {', then '.join(steps)}, "
                            f"or pass --init-from DIR")


def estimate_pretrain_seconds(config_name, steps=600, batch_size=32, seq_len=256, probe_batch=4):
    """Roughly how long `python train_pretrain.py --config NAME` takes on this machine: two training steps of the
    preset on a few random sequences are timed (the second, once kernels are set up) and scaled to the default
    batch and number of steps, evals not counted. Used only by the error that says pretraining must come first."""
    cpu_threads()
    device = resolve_device("auto")
    run = Run()
    run.device_type, run.dtype = device, resolve_dtype("auto", device)
    model = MiniGPT(get_config(config_name, max_seq_len=seq_len)).to(device)
    optimizer = model.configure_optimizer(1e-4, 0.0, device_type=device)
    x = torch.randint(0, model.config.vocab_size, (probe_batch, seq_len), device=device)
    for _ in range(2):
        start = time.time()
        with autocast(run):
            loss = model(x, x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
    return (time.time() - start) * batch_size / probe_batch * steps


def copy_tokenizer(args, run):
    """The tokenizer of the run we start from, copied into this run directory (every run dir is self-contained)
    by rank 0, then read by every rank."""
    path = os.path.join(args.out_dir, "tokenizer.json")
    if run.master:
        BPETokenizer.load(os.path.join(args.init_from, "tokenizer.json")).save(path)
    if run.ddp:
        dist.barrier()  # rank 0 wrote tokenizer.json; the others read it
    return BPETokenizer.load(path)


def wrap_model(model, run, args):
    """torch.compile (--compile) and DistributedDataParallel (under torchrun); returns the model to call."""
    if args.compile:
        model = torch.compile(model)
    if run.ddp:
        moe = getattr(getattr(model, "config", None), "n_experts", 0) > 0
        model = DistributedDataParallel(model, device_ids=[run.local_rank] if run.device_type == "cuda" else None,
                                        find_unused_parameters=moe)  # an expert may get no tokens
    return model


class BadSteps:
    """Non-finite losses: skip the update, and stop with a clear message after --max-bad-steps in a row."""

    def __init__(self, args):
        self.args, self.count = args, 0

    def skip(self, loss, step, optimizer, log):
        if math.isfinite(loss):
            self.count = 0
            return False
        optimizer.zero_grad(set_to_none=True)
        self.count += 1
        log.log({"step": step, "nonfinite_loss_steps": self.count})
        if self.count >= self.args.max_bad_steps:
            raise ValueError(f"{self.count} non-finite losses in a row at step {step}; the last good checkpoint is "
                             f"{os.path.join(self.args.out_dir, 'ckpt_latest.pt')} (try a lower --lr)")
        return True


def halve_micro_batch(B, G, run, log, step):
    """CUDA out of memory: the same effective batch with half the memory (half the micro-batch, twice the steps)."""
    torch.cuda.empty_cache()
    if B == 1:
        raise torch.cuda.OutOfMemoryError("out of memory with a micro-batch of 1")
    B, G = B // 2, G * 2
    if run.master:
        print(f"\nCUDA out of memory: micro-batch now {B}, grad-accum {G} (same {B * G * run.world_size} sequences per step)")
        log.log({"step": step, "oom_micro_batch": B, "oom_grad_accum": G})
    return B, G


def save_run(args, state, is_best):
    """ckpt_latest.pt always, ckpt_best.pt when validation improved; both atomic."""
    latest = os.path.join(args.out_dir, "ckpt_latest.pt")
    save_checkpoint(latest, state)
    if is_best:  # copy, then rename: ckpt_best.pt is never half written either
        shutil.copyfile(latest, latest + ".best.tmp")
        os.replace(latest + ".best.tmp", os.path.join(args.out_dir, "ckpt_best.pt"))


def resume_training(args, run, models, optimizer):
    """--resume: load weights into each of {checkpoint key: module}, the optimizer and the RNG; returns the
    checkpoint dict (step, best_val_loss, and whatever the stage stored), or None when not resuming."""
    if not args.resume:
        return None
    path = resume_path(args)
    ckpt = load_checkpoint(path)
    stage = ckpt.get("args", {}).get("stage", args.stage)
    if stage != args.stage:
        raise ValueError(f"{path}: a {stage} checkpoint, and --resume continues a {args.stage} run; to start "
                         f"{args.stage} from its weights, pass --init-from {os.path.dirname(path) or '.'}")
    missing = [k for k in ("step", "best_val_loss", "rng", "optimizer", "model_config", *models) if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: cannot resume from it (no {', '.join(map(repr, missing))} in the checkpoint)")
    history = os.path.join(os.path.dirname(path), "metrics.jsonl")
    if run.master and os.path.isfile(history) and not os.path.exists(os.path.join(args.out_dir, "metrics.jsonl")):
        shutil.copyfile(history, os.path.join(args.out_dir, "metrics.jsonl"))  # a run forked into a new --out-dir keeps its log
    for key, module in models.items():
        load_weights(module, ckpt[key], ckpt["model_config"] if key == "model" else None, source=path)
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    if run.master:
        best = f"best checkpoint: step {ckpt['best_step']}" if ckpt.get("best_step") is not None else "no best yet"
        print(f"resumed from {path} at step {ckpt['step']} ({best})")  # the best metric may be negated: not printed
    return ckpt


def best_so_far(ckpt):
    """(best_metric, best_step, baseline, evals_without_improvement) that track_best carries from eval to eval: from
    the checkpoint a run resumes from, or a fresh run's (inf, None, None, 0)."""
    if not ckpt:
        return float("inf"), None, None, 0
    return (ckpt["best_val_loss"], ckpt.get("best_step"), ckpt.get("baseline_val_loss"),
            ckpt.get("evals_without_improvement", 0))


def track_best(step, metric, best_metric, baseline, evals_without_improvement, delta):
    """After an eval (lower metric is better): (improved, baseline, evals_without_improvement). Step 0 is the model
    training starts from: its metric becomes the baseline, never the best (a DPO run whose step 0 stayed best once
    handed generate.py the SFT model). Later, improved means beating the best by more than `delta`, and patience
    counts the evals that beat neither the best so far nor the start.
    Example: step 0, 6.8 -> (False, 6.8, 0); then step 100, 0.9 with best inf -> (True, 6.8, 0)."""
    if step == 0:
        return False, metric, evals_without_improvement
    reference = best_metric if baseline is None else min(best_metric, baseline)
    evals_without_improvement = 0 if metric < reference - delta else evals_without_improvement + 1
    return metric < best_metric - delta, baseline, evals_without_improvement


def over_memory_limit(args, run):
    """Whether the system's memory in use passed --max-memory percent (this rank's reading; rank 0 says so in a line)."""
    used = system_memory_percent() if args.max_memory else None
    if used is None or used <= args.max_memory:
        return False
    if run.master:
        print(f"\nmemory: the system uses {used:.0f}% of its memory, over --max-memory {args.max_memory:g}; "
              f"saving and stopping (free memory or lower --batch-size, then resume)")
    return True


def best_summary(best_step, best_metric, baseline, name="val loss", sign=1):
    """One line on the best checkpoint against step 0 (lower metric is better; `sign` -1 prints a metric kept negated,
    such as PPO's reward). Example: (400, 0.39, 6.79) -> 'best checkpoint: step 400, val loss 0.3900 (step 0: 6.7900)'."""
    if best_step is None:
        return "no eval after step 0, so no ckpt_best.pt (generate.py then loads ckpt_latest.pt)"
    best, base = sign * best_metric, None if baseline is None else sign * baseline
    line = f"best checkpoint: step {best_step}, {name} {best:.4f}"
    if base is None:
        return line
    if best_metric < baseline:
        return f"{line} (step 0: {base:.4f})"
    return (f"{line}; it never improved on step 0's {base:.4f} (the model training started from), so "
            f"ckpt_best.pt is the best trained step, not better than the start")


class ETA:
    """Early in a run, one line on how long it will take on this machine: the steps left times the second step's
    time (the first sets up kernels and takes ~2x as long here), plus the evals left times step 0's eval. A run that
    is slow on this CPU says so at once, instead of a README figure measured on another one. It also says how long
    start-up took (imports, data, tokenizer, step 0's eval) to reach the first step."""

    def __init__(self, args, run, step):
        self.args, self.run, self.start_step, self.eval_seconds = args, run, step, 0.0
        self.mark, self.first_step_at = time.time(), None

    def eval_done(self):
        self.eval_seconds = time.time() - self.mark
        self.mark = time.time()

    def step_done(self, step):
        now = time.time()
        if step == self.start_step + 1:
            self.first_step_at, self.mark = self.mark - PROCESS_START, now
        left = self.args.max_steps - step
        if step != self.start_step + 2 or left <= 0 or not self.run.master:
            return
        seconds, args = now - self.mark, self.args
        evals = left // args.eval_interval + (args.max_steps % args.eval_interval != 0)
        total = left * seconds + evals * self.eval_seconds
        budget = f"; --time-budget stops it at {duration(args.time_budget)}" if args.time_budget else ""
        print(f"\nthe first step began {self.first_step_at:.1f} s after start; a step takes {seconds:.2f} s, so the "
              f"{left} steps left take about {duration(left * seconds)}, plus {evals} eval{'s' * (evals != 1)} of "
              f"{self.eval_seconds:.1f} s: about {duration(total)} in all{budget}")


def _process_start():
    """When this process started (Linux: from /proc, so the imports count too), else now."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


PROCESS_START = _process_start()


def resume_path(args):
    path = os.path.join(args.out_dir, "ckpt_latest.pt") if args.resume == "latest" else args.resume
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: nothing to resume from (train without --resume first)")
    return path


def plain_args(args):
    """The flags as plain values, for a checkpoint that torch.load(weights_only=True) can read."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, type(None)))}


class MetricsLog:
    """metrics.jsonl (one JSON object per line, flushed, appended on resume) and optional TensorBoard."""

    def __init__(self, out_dir, enabled=True, tensorboard=False, resume_step=None):
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.enabled, self.tb = enabled, None
        if enabled and resume_step is None and os.path.exists(self.path):
            os.remove(self.path)  # a fresh run starts a fresh log
        if enabled and resume_step is not None and os.path.exists(self.path):
            rows = read_metrics(self.path)  # drop what was logged after the checkpoint we resume from
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= resume_step)
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))
            except ImportError:
                print("warning: --tensorboard needs the tensorboard package (pip install tensorboard); skipping")

    def log(self, row):
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])


def read_metrics(path):
    """The rows of a metrics.jsonl. A line that is not JSON (a run killed mid-write tears its last line) is
    skipped with a warning that names it; resuming rewrites the log without it."""
    rows, torn = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                torn.append(str(number))
    if torn:
        print(f"warning: {path}: skipped {len(torn)} line(s) that are not JSON (line {', '.join(torn[:5])})", file=sys.stderr)
    return rows


def system_memory_percent():
    """The share of the machine's memory in use, in percent (Linux: /proc/meminfo's MemTotal - MemAvailable, what
    `free` calls used; elsewhere psutil's figure where psutil is installed), or None where neither is there."""
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[1:]}
        return 100.0 * (fields["MemTotal"] - fields["MemAvailable"]) / fields["MemTotal"]
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        import psutil  # optional: macOS and Windows have no /proc
        return float(psutil.virtual_memory().percent)
    except ImportError:
        return None


def peak_memory_mb(run):
    """CUDA: the peak of torch's allocations; MPS: what the Metal driver holds for this process now (torch.mps keeps
    no peak); CPU: the process's peak resident memory."""
    if run.device_type == "cuda":
        return torch.cuda.max_memory_allocated(run.device) / 2**20
    if run.device_type == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20  # Linux reports KiB, macOS bytes


def plot_metrics(run_dirs, out_path, keys=(("train_loss", "val_loss"), ("lr",))):
    """One figure with a panel per group of keys that some run logged; each run directory's metrics.jsonl as lines
    (plot_runs.py too). Returns the groups drawn."""
    import matplotlib  # here, not at the top: it takes ~0.5 s to import and most runs with --no-plot never draw
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = {run_dir: read_metrics(os.path.join(run_dir, "metrics.jsonl")) for run_dir in run_dirs}
    # a panel only for metrics some run logged (SFT on your own data has no built-in pass rate to draw)
    keys = [group for group in keys if any(r.get(k) is not None for rows in runs.values() for r in rows for k in group)]
    if not keys:
        return keys
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
    for ax, group in zip(axes[0], keys):
        for run_dir, rows in runs.items():
            label = os.path.basename(os.path.normpath(run_dir)) if len(run_dirs) > 1 else ""
            for key in group:
                pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), label=f"{label} {key}".strip(), marker="o" if key.startswith("val") else None,
                            markersize=3)
        ax.set_xlabel("step")
        ax.set_title(", ".join(group))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)  # a bare file name goes in the current folder
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return keys  # the panels drawn


# ----------------------------------------------------------------------------- Ctrl+C and errors

class StopSignal:
    """The first Ctrl+C (or SIGTERM) asks the loop to save and stop at the end of the current step; a second
    one interrupts at once. The loop checks `.requested` after each optimizer step."""

    def __init__(self):
        self.requested, self.previous = False, {}

    def install(self):
        """Take over SIGINT and SIGTERM until restore(); returns self. Install it once the data is ready: forked
        tokenizer workers must not inherit it."""
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl+C again to abort without saving)")


def print_saved_for_resume(args, step):
    """After Ctrl+C: where the checkpoint is and the exact command that continues from it."""
    print(f"saved {os.path.join(args.out_dir, 'ckpt_latest.pt')} at step {step}; resume with:\n  {resume_command(args)}")


def resume_command(args):
    argv = [a for a in sys.argv if a != "--resume"]
    return f"python {' '.join(argv)} --resume"


def cli(main):
    """common.cli for a training script: a run that fails before its first checkpoint leaves no run folder behind."""
    _CREATED_RUN_DIRS.clear()  # only what this run makes is removed if it fails
    return common_cli(main, on_failure=remove_unfinished_run_dirs)


def grad_norms_by_group(model):
    """Gradient norm per layer group (embedding, each block, final norm), for --inspect."""
    groups = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        parts = name.replace("module.", "").replace("_orig_mod.", "").replace("backbone.", "").split(".")
        key = ".".join(parts[:2]) if parts[0] == "layers" else parts[0]
        groups[key] = groups.get(key, 0.0) + p.grad.float().pow(2).sum().item()
    return {k: v ** 0.5 for k, v in groups.items()}
