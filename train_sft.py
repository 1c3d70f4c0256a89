"""
Supervised fine-tuning: teach a pretrained model to answer in the chat format, with the loss on assistant tokens only.

    python train_sft.py                               # from checkpoints/pretrain_tiny, on the built-in conversations
    python train_sft.py --data alpaca.json sharegpt.jsonl:0.5 --max-steps 2000
    python train_sft.py --system-prompt "You are a helpful assistant." --system-prompt-prob 0.5 --turn-drop-prob 0.2
    python train_sft.py --resume                      # continue exactly where the run in --out-dir stopped

Conversations in any chat format data.py reads are rendered by the tokenizer's chat template (ChatML); the loss
mask is 1 on each assistant reply and its <|im_end|>, 0 on the rest. At each eval a fixed regression suite of
questions with known answers (the built-in held-out questions, or --eval-prompts FILE) is answered greedily and
its pass rate is logged next to the losses.

Sections: 1 flags, 2 setup, 3 data and tokenizer, 4 model and optimizer, 5 resume, 6 the loop, 7 final save.
"""
import contextlib
import math
import os
import time

import torch
from tqdm import tqdm

import builtin_data
import train_utils as tu
from data import DataError, EpochSampler, SFTDataset, load_data, regression_suite, sft_batch
from generate import TextGenerator, answer_accuracy
from model import load_model, lora_state_dict


# ----------------------------------------------------------------------------- 1. flags
def parse_args(argv=None):
    # Fine-tuning defaults: a quarter of pretraining's lr and a short warmup, so the pretrained weights move
    # gently; no weight decay pulling them toward zero on a small dataset.
    p = tu.common_parser("Supervised fine-tuning on conversations.", "sft",
                         lr=5e-4, max_steps=300, batch_size=32, seq_len=256, warmup_steps=20, eval_interval=50,
                         eval_iters=5, weight_decay=0.0)
    p.add_argument("--system-prompt", default=None, help="a system message added to conversations that have none")
    p.add_argument("--system-prompt-prob", type=float, default=1.0, help="probability of adding --system-prompt")
    p.add_argument("--turn-drop-prob", type=float, default=0.0,
                   help="augmentation: drop a multi-turn conversation's trailing turns with this probability")
    p.add_argument("--eval-prompts", default=None, help="JSONL of {\"prompt\", \"expected\"} answered greedily at each "
                   "eval, or 'builtin' for the built-in held-out questions (default: those with --data builtin, else none)")
    p.add_argument("--eval-max-new-tokens", type=int, default=48)
    tu.add_lora_flags(p)
    args = tu.finish_args(p.parse_args(argv), "sft")
    tu.check_flags(args, at_least=dict(system_prompt_prob=0, turn_drop_prob=0, eval_max_new_tokens=1),
                   at_most=dict(system_prompt_prob=1, turn_drop_prob=1))
    tu.check_lora_flags(args)
    tu.default_init_from(args, "pretrain", "train_pretrain.py")
    return args


def main(argv=None):
    args = parse_args(argv)

    # ------------------------------------------------------------------------- 2. setup
    run = tu.setup(args)
    tu.prepare_run_dir(args, run)  # refuses a folder that holds a run, unless --resume or --overwrite

    # ------------------------------------------------------------------------- 3. data and tokenizer
    tokenizer = tu.copy_tokenizer(args, run)
    train_convs, val_convs, stats = load_data(args, "chat")
    if args.data == ["builtin"] and not args.val_data:
        val_convs = builtin_data.sft_conversations(split="heldout")  # held-out questions, never trained on
    dataset_args = dict(tokenizer=tokenizer, seq_len=args.seq_len, system_prompt=args.system_prompt,
                        system_prompt_prob=args.system_prompt_prob, seed=args.seed)
    train_ds = SFTDataset(train_convs, **dataset_args)
    val_ds = SFTDataset(val_convs, **dataset_args) if val_convs else train_ds
    if len(train_ds) == 0:
        raise DataError(f"{', '.join(args.data)}: no conversation has an assistant token within --seq-len {args.seq_len}")
    # the built-in questions grade a model only when it learned the built-in world: on your own data they are off
    suite = regression_suite(args.eval_prompts or "builtin") if args.data == ["builtin"] or args.eval_prompts else []
    sampler = EpochSampler(len(train_ds), args.seed)
    if run.master:
        tu.write_json(os.path.join(args.out_dir, "dataset_stats.json"),
                      {**stats, "train": train_ds.stats(), "val": val_ds.stats(), "regression_suite": len(suite)})
        print(f"data: {len(train_ds)} train conversations ({train_ds.dropped} dropped: no assistant token within "
              f"--seq-len; {train_ds.truncated} truncated), {len(val_ds)} val, {len(suite)} regression prompts")

    # ------------------------------------------------------------------------- 4. model and optimizer
    model = load_model(args.init_from, run.device).train()
    model = tu.apply_lora(model, args, run)  # --lora-rank: only low-rank adapters train (the checkpoint keeps only them)
    config = model.config
    if args.seq_len > config.max_seq_len:
        raise ValueError(f"--seq-len {args.seq_len} exceeds the model's max_seq_len {config.max_seq_len}")
    optimizer = model.configure_optimizer(args.lr, args.weight_decay, device_type=run.device_type)
    if run.master:
        print(f"model: {model.num_params() / 1e6:.2f}M parameters from {model.checkpoint}")
        tu.write_run_config(args, config, tokenizer)

    # ------------------------------------------------------------------------- 5. resume
    ckpt = tu.resume_training(args, run, {"model": model}, optimizer)  # --resume: weights, optimizer, RNG (else None)
    raw_model, model = model, tu.wrap_model(model, run, args)  # raw_model: the weights; model: what the loop calls
    lora = getattr(raw_model, "lora", None)  # with --lora-rank the checkpoint keeps only the adapters
    log = tu.MetricsLog(args.out_dir, enabled=run.master, tensorboard=args.tensorboard,
                        resume_step=ckpt["step"] if ckpt else None)
    if args.inspect:
        return inspect_first_batch(args, run, model, raw_model, optimizer, train_ds, sampler, tokenizer)

    # ------------------------------------------------------------------------- 6. the loop
    # The loop's state, declared together. best_metric (lower is better) picks ckpt_best.pt: what SFT is for, the
    # held-out pass rate, negated, when there is a regression suite; else the val loss. The val loss bottoms out early
    # (an assistant-token loss on a small set overfits) while answers still improve: by val loss, step 150 was kept at
    # a pass rate of 0.310 while step 300 answered 0.394. Step 0 is the baseline: compared with, never the best.
    start_step = step = ckpt["step"] if ckpt else 0
    best_metric, best_step, baseline_metric, evals_without_improvement = tu.best_so_far(ckpt)
    micro_batch, grad_accum, world_size = args.batch_size, args.grad_accum, run.world_size
    trained = [p for group in optimizer.param_groups for p in group["params"]]  # what the optimizer updates
    ctrl_c = tu.StopSignal().install()  # from here the first Ctrl+C asks the loop to save and stop
    bad_steps = tu.BadSteps(args)  # non-finite losses: skip the update; stop after --max-bad-steps in a row
    eta = tu.ETA(args, run, step)  # after the first steps: how long the whole run will take on this machine
    started_at, t_last, tokens_since_log = time.time(), time.time(), 0
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

        # --- once in a while: evaluate (the val loss on every rank's share of batches; the regression suite on rank 0),
        # keep the best, save and plot (rank 0)
        evaluate_now = not resumed_here and (step % args.eval_interval == 0 or last_step or out_of_time)
        improved = early_stop = False
        if evaluate_now:
            model.eval()
            losses = []
            with torch.no_grad():  # the same first --eval-iters validation batches every time
                for j in range(run.rank, args.eval_iters, world_size):
                    indices = [(j * args.batch_size + i) % len(val_ds) for i in range(args.batch_size)]
                    x, y, loss_mask = (t.to(run.device) for t in sft_batch(val_ds, indices, tokenizer.pad_id))
                    with tu.autocast(run):
                        losses.append(raw_model(x, y, loss_mask).loss.item())  # assistant tokens only
            model.train()
            val_loss = tu.all_reduce_mean(sum(losses) / max(1, len(losses)), run)
            row = {"step": step, "val_loss": val_loss, "memory_mb": tu.peak_memory_mb(run)}
            if suite and run.master:  # greedy answers to questions with known answers (generation: rank 0 alone)
                with tu.autocast(run):
                    row["pass_rate"], examples = answer_accuracy(TextGenerator(raw_model, tokenizer), suite,
                                                                 args.eval_max_new_tokens)
                model.train()  # the generator switched the model to eval mode
            metric = -tu.from_master(row.get("pass_rate", 0.0), run) if suite else val_loss  # a collective
            improved, baseline_metric, evals_without_improvement = tu.track_best(
                step, metric, best_metric, baseline_metric, evals_without_improvement, args.early_stop_delta)
            if improved:
                best_metric, best_step = metric, step
            if run.master:
                log.log(row)
                best = " (best)" if improved else ""  # after the figure that picks the best checkpoint
                if suite:
                    (prompt, expected), reply = examples[0]
                    standard_error = tu.standard_error(row["pass_rate"], len(suite))
                    print(f"\nstep {step}: val loss {val_loss:.4f}, regression pass rate {row['pass_rate']:.3f} +- "
                          f"{standard_error:.3f}{best}\n  {prompt!r} -> {reply!r} (expected {expected!r})")
                else:
                    print(f"\nstep {step}: val loss {val_loss:.4f}{best}")
            if step == 0:
                eta.eval_done()
            early_stop = args.early_stop_patience > 0 and evals_without_improvement >= args.early_stop_patience

        # --- save ckpt_latest.pt at each eval, every --save-interval steps and before stopping; ckpt_best.pt when
        # improved. The checkpoint is a plain dict (torch.load(weights_only=True) reads it), written atomically.
        save_now = evaluate_now or stop_now or (step > start_step and args.save_interval and step % args.save_interval == 0)
        if save_now and run.master:
            checkpoint = {
                "model": lora_state_dict(raw_model) if lora else raw_model.state_dict(), "lora": lora,
                "optimizer": optimizer.state_dict(), "step": step,
                "best_val_loss": best_metric, "best_step": best_step, "baseline_val_loss": baseline_metric,
                "evals_without_improvement": evals_without_improvement, "rng": tu.rng_state(),
                "model_config": raw_model.config.to_dict(), "args": tu.plain_args(args),
                "scaler": run.scaler.state_dict(),  # the fp16 loss scale (empty unless fp16 on CUDA)
            }
            tu.save_run(args, checkpoint, is_best=improved)
            if evaluate_now and not args.no_plot:
                tu.plot_metrics([args.out_dir], os.path.join(args.out_dir, "plots", "loss_curve_latest.png"),
                                keys=(("train_loss", "val_loss"), ("pass_rate",), ("lr",)))
        if evaluate_now:
            t_last, tokens_since_log = time.time(), 0  # tokens/s measures training, not evaluation
        if early_stop and run.master:
            print(f"early stop: no val improvement > {args.early_stop_delta} in {args.early_stop_patience} evals")
        if stop_now and run.master:
            tu.print_saved_for_resume(args, step)
        if last_step or stop_now or early_stop or out_of_time:
            break

        # --- one training step: grad_accum micro-batches of micro_batch conversations, their gradients averaged
        lr = tu.get_lr(step, args)  # warmup, then cosine down to --min-lr
        for group in optimizer.param_groups:  # lr_scale: e.g. PPO's critic learns faster
            group["lr"] = lr * group.get("lr_scale", 1.0)
        while True:  # a CUDA out-of-memory error halves the micro-batch and retries (the same samples per step)
            try:
                train_loss = 0.0
                for micro in range(grad_accum):
                    # one deterministic sample stream, as in pretraining: each (step, micro-step, rank) its own slice
                    position = (step * grad_accum * world_size + micro * world_size + run.rank) * micro_batch
                    x, y, loss_mask = (t.to(run.device) for t in sft_batch(
                        train_ds, sampler.take(position, micro_batch), tokenizer.pad_id, args.turn_drop_prob, args.seed,
                        position))  # (B, T) each; loss_mask 1 on assistant replies and their <|im_end|>
                    sync = contextlib.nullcontext() if not run.ddp or micro == grad_accum - 1 else model.no_sync()
                    with sync:  # under DDP, gradients are averaged across ranks only on the last micro-step
                        with tu.autocast(run):
                            out = model(x, y, loss_mask)  # cross-entropy over assistant tokens only
                            loss = out.loss + out.aux_loss  # what is optimised (and logged)
                        run.scaler.scale(loss / grad_accum).backward()  # / grad_accum: the mean over micro-steps
                    train_loss += loss.item() / grad_accum
                    tokens_since_log += int(loss_mask.sum())
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
        bar.update(1)
        eta.step_done(step)
        if step % args.log_interval == 0 or step == args.max_steps:
            assistant_tokens_per_sec = tokens_since_log * world_size / (time.time() - t_last)
            t_last, tokens_since_log = time.time(), 0
            bar.set_postfix(loss=f"{train_loss:.4f}")
            log.log({"step": step, "train_loss": train_loss, "lr": lr, "grad_norm": grad_norm,
                     "assistant_tokens_per_sec": assistant_tokens_per_sec, "memory_mb": tu.peak_memory_mb(run)})
    bar.close()
    ctrl_c.restore()

    # ------------------------------------------------------------------------- 7. final save and plot
    if run.master:
        if not stop_now:  # ended by its own rule (steps, early stop, time budget), not Ctrl+C or the memory guard:
            tu.write_json(os.path.join(args.out_dir, tu.DONE_FILE), {"step": step})  # `make` reuses a finished run
        rates = [r["pass_rate"] for r in tu.read_metrics(log.path) if "pass_rate" in r]
        rate = f"; regression pass rate {rates[0]:.3f} -> {rates[-1]:.3f}" if rates else ""
        best = tu.best_summary(best_step, best_metric, baseline_metric, *(("held-out pass rate", -1) if suite else ()))
        print(f"done: step {step}; {best}{rate}; run directory {args.out_dir}")
    return best_metric


def inspect_first_batch(args, run, model, raw_model, optimizer, train_ds, sampler, tokenizer):
    """--inspect: the first conversation token by token with its loss mask, one optimizer step, gradient norms."""
    x, y, loss_mask = (t.to(run.device) for t in sft_batch(train_ds, sampler.take(0, args.batch_size), tokenizer.pad_id))
    print(f"batch: input {tuple(x.shape)}, {int(loss_mask.sum())} of {loss_mask.numel()} target positions carry loss")
    print(f"{'pos':>4} {'input':<18} {'target':<18} {'loss':>4}")
    for i in range(min(48, x.shape[1])):
        print(f"{i:>4} {tokenizer.id_to_token(int(x[0, i]))!r:<18} {tokenizer.id_to_token(int(y[0, i]))!r:<18} {int(loss_mask[0, i]):>4}")
    print("trained-on text of the first sample:", repr(tokenizer.decode(y[0][loss_mask[0] == 1].tolist())))
    with tu.autocast(run):
        out = model(x, y, loss_mask)
    (out.loss + out.aux_loss).backward()
    print(f"loss {out.loss.item():.4f} (ln vocab = {math.log(tokenizer.vocab_size):.4f})")
    for name, norm in tu.grad_norms_by_group(raw_model).items():
        print(f"  grad norm {name:<12} {norm:.4e}")
    optimizer.step()
    print("one optimizer step done; exiting (--inspect)")


if __name__ == "__main__":
    tu.cli(main)
