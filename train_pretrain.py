"""
Pretraining: next-token prediction over packed blocks of text.

    python train_pretrain.py                          # tiny model on the built-in data, a few minutes on CPU
    python train_pretrain.py --config small --data corpus.jsonl:0.5 notes.txt --max-steps 20000
    python train_pretrain.py --resume                 # continue the run in --out-dir exactly where it stopped
    torchrun --nproc_per_node 2 train_pretrain.py     # data parallel (gloo on CPU, nccl on CUDA)

Sections: 1 flags, 2 setup, 3 data and tokenizer, 4 model and optimizer, 5 resume, 6 the loop, 7 final save.
"""
import contextlib
import math
import os
import time

import torch

import train_utils as tu
from data import EpochSampler, cache_key, data_key, get_batch, load_data, packed_text_data
from generate import GenerationConfig, TextGenerator
from model import MiniGPT, get_config, load_model, load_weights
from tokenizer import BPETokenizer


# ----------------------------------------------------------------------------- 1. flags
def parse_args(argv=None):
    p = tu.common_parser("Pretrain MiniGPT on text.", "pretrain",
                         lr=2e-3, max_steps=600, batch_size=32, seq_len=256, warmup_steps=50, eval_interval=100)
    p.add_argument("--tokenizer", default=None, help="a tokenizer.json to use (default: train one on the data)")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary size of a tokenizer we train (default: the preset's)")
    p.add_argument("--retrain-tokenizer", action="store_true", help="train a new tokenizer even if --out-dir has one")
    p.add_argument("--tokenizer-samples", type=int, default=20000, help="train the tokenizer on this many sampled documents")
    p.add_argument("--tokenizer-max-cjk-chars", type=int, default=2, help="longest Chinese/Japanese run one token may "
                   "spell (0: no limit). Without it, the built-in Chinese facts became one token each and SFT could "
                   "not answer new questions about them")
    p.add_argument("--sample-prompt", default="Once upon a time", help="prompt for the sample printed at each eval")
    return tu.finish_args(p.parse_args(argv), "pretrain")


def main(argv=None):
    args = parse_args(argv)

    # ------------------------------------------------------------------------- 2. setup
    run = tu.setup(args)
    previous = tu.prepare_run_dir(args, run)  # refuses a folder that holds a run, unless --resume or --overwrite

    # ------------------------------------------------------------------------- 3. data and tokenizer
    # The tokenizer: an explicit file, the --init-from run's, the resumed run's, the one in --out-dir if it was
    # trained on this very data, or a new one. (Reusing one trained on other data once made step 0's bpb 5.92, not 3.04.)
    tok_path = os.path.join(args.out_dir, "tokenizer.json")
    vocab_size = args.vocab_size or get_config(args.config).vocab_size
    trained_on = cache_key([data_key(args), vocab_size, args.tokenizer_samples, args.tokenizer_max_cjk_chars])
    recorded = ((previous or {}).get("tokenizer") or {}).get("trained_on")
    source, why = None, None
    if args.tokenizer:
        source, why = args.tokenizer, "given by --tokenizer"
    elif args.init_from:
        source, why = os.path.join(args.init_from, "tokenizer.json"), "the --init-from run's"
    elif args.resume:
        source, why = os.path.join(os.path.dirname(tu.resume_path(args)), "tokenizer.json"), "the resumed run's"
        trained_on = recorded
    elif os.path.isfile(tok_path) and not args.retrain_tokenizer:
        if recorded == trained_on:
            source, why = tok_path, "already in --out-dir, trained on the same data and flags"
        elif previous is None:  # put there by hand: nothing says what it was trained on
            source, why = tok_path, "found in --out-dir; --retrain-tokenizer trains a new one"
            trained_on = None
        elif run.master:
            print(f"tokenizer: {tok_path} was trained on other data or flags; training a new one")
    train_texts = val_texts = stats = None
    if run.master:
        if source:
            tokenizer = BPETokenizer.load(source)
            print(f"tokenizer: {source} ({why}), {tokenizer.vocab_size} tokens")
        else:
            train_texts, val_texts, stats = load_data(args, "text")
            print(f"tokenizer: training a {vocab_size}-token tokenizer on up to {args.tokenizer_samples} documents "
                  f"of {' '.join(args.data)}")
            tokenizer = BPETokenizer.train(train_texts, vocab_size, max_samples=args.tokenizer_samples, seed=args.seed,
                                           max_cjk_chars=args.tokenizer_max_cjk_chars or None)
        if os.path.abspath(source or "") != os.path.abspath(tok_path):
            tokenizer.save(tok_path)
    if run.ddp:
        torch.distributed.barrier()  # rank 0 wrote tokenizer.json; the others read it
    tokenizer = BPETokenizer.load(tok_path)

    # Token ids are cached on disk, keyed by the data files, sampling flags and the tokenizer itself.
    train_ds, val_ds, val_tokens_per_byte = packed_text_data(args, run, tokenizer, (train_texts, val_texts, stats))
    sampler = EpochSampler(len(train_ds), args.seed)

    # ------------------------------------------------------------------------- 4. model and optimizer
    config = tu.model_config(args, tokenizer.vocab_size)
    model = MiniGPT(config).to(run.device)
    if args.init_from:
        load_weights(model, load_model(args.init_from).state_dict(), source=args.init_from)
    optimizer = model.configure_optimizer(args.lr, args.weight_decay, device_type=run.device_type)
    if run.master:
        print(f"model: {args.config}, {model.num_params() / 1e6:.2f}M parameters, dtype {args.dtype}, device {run.device}")
        tu.write_run_config(args, config, tokenizer, source=source or "trained by this run", trained_on=trained_on)

    # ------------------------------------------------------------------------- 5. resume
    ckpt = tu.resume_training(args, run, {"model": model}, optimizer)
    step, best_val_loss = (ckpt["step"], ckpt["best_val_loss"]) if ckpt else (0, float("inf"))
    raw_model, model = model, tu.wrap_model(model, run, args)
    log = tu.MetricsLog(args.out_dir, enabled=run.master, tensorboard=args.tensorboard, resume_step=step if ckpt else None)
    sample_gen = TextGenerator(raw_model, tokenizer)

    @torch.no_grad()
    def evaluate():
        """Mean loss over the first eval_iters validation batches (the same batches every time)."""
        model.eval()
        losses = []
        for j in range(run.rank, args.eval_iters, run.world_size):
            x, y, mask = (t.to(run.device) for t in get_batch(val_ds, [(j * args.batch_size + i) % len(val_ds)
                                                                      for i in range(args.batch_size)]))
            with tu.autocast(run):
                losses.append(raw_model(x, y, mask).loss.item())
        model.train()
        return tu.all_reduce_mean(sum(losses) / max(1, len(losses)), run)

    def save(step, is_best):
        tu.save_run(args, tu.training_state(run, model, optimizer, step, args, best_val_loss, {
            **stop_rules.state(), "data_position": step * args.batch_size * args.grad_accum * run.world_size}), is_best)

    def eval_and_save(step):
        nonlocal best_val_loss
        val_loss = evaluate()
        improved = stop_rules.update(step, val_loss, best_val_loss)  # step 0 is the baseline, never the best
        if improved:
            best_val_loss = val_loss
        if run.master:
            bpb = val_loss / math.log(2) * val_tokens_per_byte
            log.log({"step": step, "val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50)), "val_bpb": bpb,
                     "memory_mb": tu.peak_memory_mb(run)})
            sample = sample_gen.generate(args.sample_prompt, GenerationConfig(max_new_tokens=40, temperature=0.8, top_k=50, seed=0))
            model.train()  # the generator switched the model to eval mode
            print(f"\nstep {step}: val loss {val_loss:.4f}, ppl {math.exp(min(val_loss, 50)):.2f}, bpb {bpb:.3f}"
                  f"{' (best)' if improved else ''}\n  sample: {args.sample_prompt + sample!r}")
            save(step, improved)
            if not args.no_plot:
                tu.plot_metrics([args.out_dir], os.path.join(args.out_dir, "plots", "loss_curve_latest.png"))
        return val_loss

    if args.inspect:
        return inspect_first_batch(args, run, model, raw_model, optimizer, train_ds, sampler, tokenizer)

    # ------------------------------------------------------------------------- 6. the loop
    stop_rules = tu.StopRules(args, run, ckpt)  # installed here, not earlier: forked tokenizer workers must not inherit it
    eta = tu.ETA(args, run, step)  # after the first step: how long the whole run will take on this machine
    if not ckpt:
        eval_and_save(0)
        eta.eval_done()
    model.train()
    B, G, W = args.batch_size, args.grad_accum, run.world_size
    bad_steps, t_last, steps_since_log = tu.BadSteps(args), time.time(), 0
    bar = tu.progress(total=args.max_steps, initial=step, disable=not run.master)
    while step < args.max_steps:
        lr = tu.get_lr(step, args)
        tu.set_lr(optimizer, lr)
        try:
            train_loss = 0.0
            for micro in range(G):
                # every (step, micro-step, rank) reads its own slice of one deterministic sample stream
                position = (step * G * W + micro * W + run.rank) * B
                x, y, mask = (t.to(run.device) for t in get_batch(train_ds, sampler.take(position, B)))
                # under DDP, gradients are averaged across ranks only on the last micro-step
                sync = contextlib.nullcontext() if not run.ddp or micro == G - 1 else model.no_sync()
                with sync:
                    with tu.autocast(run):
                        out = model(x, y, mask)
                        loss = out.loss + out.aux_loss  # what is optimised (and logged): next-token loss + MoE balance
                    run.scaler.scale(loss / G).backward()  # / G: the step's gradient is the mean over micro-steps
                train_loss += loss.item() / G
        except torch.cuda.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            B, G = tu.halve_micro_batch(B, G, run, log, step)
            continue
        train_loss = tu.all_reduce_mean(train_loss, run)
        if bad_steps.skip(train_loss, step, optimizer, log):  # non-finite: no update
            step += 1
            continue
        grad_norm = tu.optimizer_step(model, optimizer, run, args)  # unscale, clip, step, zero_grad
        step += 1
        steps_since_log += 1
        bar.update(1)
        eta.step_done(step)

        if step % args.log_interval == 0 or step == args.max_steps:
            tokens_per_sec = B * G * W * args.seq_len * steps_since_log / (time.time() - t_last)
            t_last, steps_since_log = time.time(), 0
            bar.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tokens_per_sec:,.0f}")
            log.log({"step": step, "train_loss": train_loss, "lr": lr, "grad_norm": grad_norm,
                     "tokens_per_sec": tokens_per_sec, "memory_mb": tu.peak_memory_mb(run)})
        stop_now, out_of_time = stop_rules.ctrl_c() or stop_rules.over_memory(), stop_rules.out_of_time()
        if step % args.eval_interval == 0 or step == args.max_steps or out_of_time:
            eval_and_save(step)
            t_last, steps_since_log = time.time(), 0  # tokens/s measures training, not evaluation
            if stop_rules.early_stop():
                break
            if out_of_time:
                if run.master:
                    print(f"time budget of {args.time_budget:.0f}s reached at step {step}")
                break
        elif (args.save_interval and step % args.save_interval == 0) or stop_now:
            if run.master:
                save(step, False)
        if stop_now:
            if run.master:
                tu.print_saved_for_resume(args, step)
            break
    bar.close()
    stop_rules.close()

    # ------------------------------------------------------------------------- 7. final save and plot
    if run.master:
        if not stop_rules.interrupted:  # ended by its own rule (steps, early stop, time budget), not Ctrl+C:
            tu.write_json(os.path.join(args.out_dir, tu.DONE_FILE), {"step": step})  # `make` reuses a finished run
        if not args.no_plot and os.path.exists(log.path):
            tu.plot_metrics([args.out_dir], os.path.join(args.out_dir, "plots", "loss_curve_latest.png"))
        print(f"done: step {step}; {stop_rules.summary(best_val_loss)}; run directory {args.out_dir}")
    return best_val_loss


def inspect_first_batch(args, run, model, raw_model, optimizer, train_ds, sampler, tokenizer):
    """--inspect: what the model sees (text, ids, mask side by side), one optimizer step, gradient norms."""
    x, y, mask = (t.to(run.device) for t in get_batch(train_ds, sampler.take(0, args.batch_size)))
    print(f"batch: input {tuple(x.shape)} {x.dtype}, target {tuple(y.shape)}, loss_mask {tuple(mask.shape)} "
          f"({int(mask.sum())} of {mask.numel()} positions carry loss)")
    print(f"{'pos':>4} {'input':>6}  {'token':<18} {'target':>6}  {'mask':>4}")
    for i in range(min(24, x.shape[1])):
        print(f"{i:>4} {int(x[0, i]):>6}  {tokenizer.id_to_token(int(x[0, i]))!r:<18} {int(y[0, i]):>6}  {int(mask[0, i]):>4}")
    with tu.autocast(run):
        out = model(x, y, mask)
    (out.loss + out.aux_loss).backward()
    print(f"loss {out.loss.item():.4f} (ln vocab = {math.log(tokenizer.vocab_size):.4f}), aux {out.aux_loss.item():.4f}")
    for name, norm in tu.grad_norms_by_group(raw_model).items():
        print(f"  grad norm {name:<12} {norm:.4e}")
    optimizer.step()
    print("one optimizer step done; exiting (--inspect)")


if __name__ == "__main__":
    tu.cli(main)
