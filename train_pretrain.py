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
from tqdm import tqdm

import train_utils as tu
from data import EpochSampler, cache_key, data_key, get_batch, load_data, packed_text_data
from generate import GenerationConfig, TextGenerator
from model import MiniGPT, get_config, load_model, load_weights
from tokenizer import PATTERNS, BPETokenizer


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
    p.add_argument("--tokenizer-digits", default="group", choices=sorted(PATTERNS),
                   help="group: a number is one chunk that BPE merges, as GPT-2; split: one token per digit, as Llama and "
                        "Qwen (the arithmetic chains need it; on the built-in data SFT did worse with it: tokenizer.py)")
    p.add_argument("--sample-prompt", default="Once upon a time", help="prompt for the sample printed at each eval")
    args = p.parse_args(argv)
    # the cosine is cut halfway (it would reach --min-lr at 2 x --max-steps): every later stage answers better from a
    # model whose lr did not anneal (GRPO held out, seeds 1 / 2: 0.83 / 0.77 after the whole cosine, 0.89 / 0.91 cut)
    if args.lr_decay_steps is None:
        args.lr_decay_steps = 2 * args.max_steps
    return tu.finish_args(args, "pretrain")


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
    trained_on = cache_key([data_key(args), vocab_size, args.tokenizer_samples, args.tokenizer_max_cjk_chars,
                            args.tokenizer_digits])
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
                                           max_cjk_chars=args.tokenizer_max_cjk_chars or None,
                                           pattern=PATTERNS[args.tokenizer_digits])
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
    ckpt = tu.resume_training(args, run, {"model": model}, optimizer)  # --resume: weights, optimizer, RNG (else None)
    raw_model, model = model, tu.wrap_model(model, run, args)  # raw_model: the weights; model: what the loop calls
    log = tu.MetricsLog(args.out_dir, enabled=run.master, tensorboard=args.tensorboard,
                        resume_step=ckpt["step"] if ckpt else None)
    sample_generator = TextGenerator(raw_model, tokenizer)  # a short sample at each eval shows what the loss means
    if args.inspect:
        return inspect_first_batch(args, run, model, raw_model, optimizer, train_ds, sampler, tokenizer)

    # ------------------------------------------------------------------------- 6. the loop
    # The loop's state, declared together. best_val_loss: the lowest validation loss after step 0 (lower is better),
    # reached at best_step. Step 0's loss is the baseline (the model we start from): compared with, never the best.
    start_step = step = ckpt["step"] if ckpt else 0
    best_val_loss, best_step, baseline_val_loss, evals_without_improvement = tu.best_so_far(ckpt)
    micro_batch, grad_accum, world_size = args.batch_size, args.grad_accum, run.world_size
    trained = [p for group in optimizer.param_groups for p in group["params"]]  # what the optimizer updates
    ctrl_c = tu.StopSignal().install()  # from here the first Ctrl+C asks the loop to save and stop (not in data workers)
    bad_steps = tu.BadSteps(args)  # non-finite losses: skip the update; stop after --max-bad-steps in a row
    eta = tu.ETA(args, run, step)  # after the first steps: how long the whole run will take on this machine
    started_at, t_last, steps_since_log = time.time(), time.time(), 0
    bar = tqdm(total=args.max_steps, initial=step, disable=not run.master, dynamic_ncols=True, unit="step", desc="train")
    model.train()
    while True:
        last_step = step == args.max_steps  # the loop runs once more at max_steps: to evaluate and save, not to train
        resumed_here = ckpt is not None and step == start_step  # this step was evaluated before it was saved

        # --- after a training step: stop early? Ctrl+C (or SIGTERM), the memory guard, the time budget. One
        # collective decides it, so every rank stops at the same step (one that stopped alone would hang the others).
        stop_now = out_of_time = False
        if step > start_step:
            over_time = args.time_budget is not None and time.time() - started_at > args.time_budget
            ctrl_c_now, memory_over, out_of_time = tu.any_rank(
                [ctrl_c.requested, not ctrl_c.requested and tu.over_memory_limit(args, run), over_time], run)
            stop_now = ctrl_c_now or memory_over

        # --- once in a while: evaluate (each rank its share of the batches), keep the best, save and plot (rank 0)
        evaluate_now = not resumed_here and (step % args.eval_interval == 0 or last_step or out_of_time)
        improved = early_stop = False
        if evaluate_now:
            model.eval()
            losses = []
            with torch.no_grad():  # the same first --eval-iters validation batches every time
                for j in range(run.rank, args.eval_iters, world_size):
                    indices = [(j * args.batch_size + i) % len(val_ds) for i in range(args.batch_size)]
                    x, y, loss_mask = (t.to(run.device) for t in get_batch(val_ds, indices))  # (B, T) each
                    with tu.autocast(run):
                        losses.append(raw_model(x, y, loss_mask).loss.item())
            model.train()
            val_loss = tu.all_reduce_mean(sum(losses) / max(1, len(losses)), run)
            improved, baseline_val_loss, evals_without_improvement = tu.track_best(
                step, val_loss, best_val_loss, baseline_val_loss, evals_without_improvement, args.early_stop_delta)
            if improved:
                best_val_loss, best_step = val_loss, step
            if run.master:
                bpb = val_loss / math.log(2) * val_tokens_per_byte  # nats per token -> bits per byte of text
                log.log({"step": step, "val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50)), "val_bpb": bpb,
                         "memory_mb": tu.peak_memory_mb(run)})
                sample = sample_generator.generate(args.sample_prompt, GenerationConfig(max_new_tokens=40,
                                                                                        temperature=0.8, top_k=50, seed=0))
                model.train()  # the generator switched the model to eval mode
                print(f"\nstep {step}: val loss {val_loss:.4f}, ppl {math.exp(min(val_loss, 50)):.2f}, bpb {bpb:.3f}"
                      f"{' (best)' if improved else ''}\n  sample: {args.sample_prompt + sample!r}")
            if step == 0:
                eta.eval_done()
            early_stop = args.early_stop_patience > 0 and evals_without_improvement >= args.early_stop_patience

        # --- save ckpt_latest.pt at each eval, every --save-interval steps and before stopping; ckpt_best.pt when
        # improved. The checkpoint is a plain dict (torch.load(weights_only=True) reads it), written atomically.
        save_now = evaluate_now or stop_now or (step > start_step and args.save_interval and step % args.save_interval == 0)
        if save_now and run.master:
            checkpoint = {
                "model": raw_model.state_dict(), "lora": None, "optimizer": optimizer.state_dict(), "step": step,
                "best_val_loss": best_val_loss, "best_step": best_step, "baseline_val_loss": baseline_val_loss,
                "evals_without_improvement": evals_without_improvement, "rng": tu.rng_state(),
                "model_config": raw_model.config.to_dict(), "args": tu.plain_args(args),
                "scaler": run.scaler.state_dict(),  # the fp16 loss scale (empty unless fp16 on CUDA)
                "data_position": step * args.batch_size * args.grad_accum * world_size,  # sequences read so far
            }
            tu.save_run(args, checkpoint, is_best=improved)
            if evaluate_now and not args.no_plot:
                tu.plot_metrics([args.out_dir], os.path.join(args.out_dir, "plots", "loss_curve_latest.png"))
        if evaluate_now:
            t_last, steps_since_log = time.time(), 0  # tokens/s measures training, not evaluation
        if early_stop and run.master:
            print(f"early stop: no val improvement > {args.early_stop_delta} in {args.early_stop_patience} evals")
        if out_of_time and run.master:
            print(f"time budget of {args.time_budget:.0f}s reached at step {step}")
        if stop_now and run.master:
            tu.print_saved_for_resume(args, step)
        if last_step or stop_now or early_stop or out_of_time:
            break

        # --- one training step: grad_accum micro-batches of micro_batch sequences, their gradients averaged
        lr = tu.get_lr(step, args)  # warmup, then cosine down to --min-lr
        for group in optimizer.param_groups:  # lr_scale: e.g. PPO's critic learns faster
            group["lr"] = lr * group.get("lr_scale", 1.0)
        while True:  # a CUDA out-of-memory error halves the micro-batch and retries (the same sequences per step)
            try:
                train_loss = 0.0
                for micro in range(grad_accum):
                    # every (step, micro-step, rank) reads its own slice of one deterministic sample stream
                    position = (step * grad_accum * world_size + micro * world_size + run.rank) * micro_batch
                    x, y, loss_mask = (t.to(run.device) for t in get_batch(train_ds, sampler.take(position, micro_batch)))
                    # under DDP, gradients are averaged across ranks only on the last micro-step
                    sync = contextlib.nullcontext() if not run.ddp or micro == grad_accum - 1 else model.no_sync()
                    with sync:
                        with tu.autocast(run):
                            out = model(x, y, loss_mask)  # logits (B, T, vocab); loss: mean next-token cross-entropy
                            loss = out.loss + out.aux_loss  # what is optimised (and logged): + the MoE balance loss
                        run.scaler.scale(loss / grad_accum).backward()  # / grad_accum: the mean over micro-steps
                    train_loss += loss.item() / grad_accum
                break
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                micro_batch, grad_accum = tu.halve_micro_batch(micro_batch, grad_accum, run, log, step)
        train_loss = tu.all_reduce_mean(train_loss, run)
        if bad_steps.skip(train_loss, step, optimizer, log):  # non-finite: no update
            step += 1
            continue
        run.scaler.unscale_(optimizer)  # fp16: clip the true gradients, not the loss-scaled ones
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trained, args.grad_clip or float("inf")))  # norm before
        run.scaler.step(optimizer)  # AdamW (a plain optimizer.step() unless fp16 on CUDA)
        run.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        steps_since_log += 1
        bar.update(1)
        eta.step_done(step)
        if step % args.log_interval == 0 or step == args.max_steps:
            tokens_per_sec = micro_batch * grad_accum * world_size * args.seq_len * steps_since_log / (time.time() - t_last)
            t_last, steps_since_log = time.time(), 0
            bar.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tokens_per_sec:,.0f}")
            log.log({"step": step, "train_loss": train_loss, "lr": lr, "grad_norm": grad_norm,
                     "tokens_per_sec": tokens_per_sec, "memory_mb": tu.peak_memory_mb(run)})
    bar.close()
    ctrl_c.restore()

    # ------------------------------------------------------------------------- 7. final save and plot
    if run.master:
        if not stop_now:  # ended by its own rule (steps, early stop, time budget), not Ctrl+C or the memory guard:
            tu.write_json(os.path.join(args.out_dir, tu.DONE_FILE), {"step": step})  # `make` reuses a finished run
        if not args.no_plot and os.path.exists(log.path):
            tu.plot_metrics([args.out_dir], os.path.join(args.out_dir, "plots", "loss_curve_latest.png"))
        print(f"done: step {step}; {tu.best_summary(best_step, best_val_loss, baseline_val_loss)}; "
              f"run directory {args.out_dir}")
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
