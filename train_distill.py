"""
Knowledge distillation (Hinton et al. 2015): a small student learns from a larger teacher's whole next-token
distribution at every position, not only from the one token the data has there.

    python train_distill.py --teacher checkpoints/pretrain_wide          # a tiny student on the built-in text
    python train_distill.py --teacher checkpoints/sft_wide --task sft --init-from checkpoints/pretrain_tiny
    python train_distill.py --teacher T --kd-loss reverse --alpha 0.9 --temperature 2
    python train_distill.py --teacher T --teacher-topk 64   # the teacher's top-64 once, then no teacher in memory
    python train_distill.py --teacher T --alpha 0           # the same student without a teacher: the baseline

    loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(student, data)

at temperature T (both distributions softened by T; T^2 keeps the gradient's scale as T changes); --kd-loss reverse
uses KL(student_T || teacher_T), which makes the student pick one of the teacher's modes rather than cover them all.
The teacher must use the student's tokenizer (it is copied from the teacher's run). --task pretrain trains on packed
text, as train_pretrain.py does; --task sft on conversations, with both losses on assistant tokens only.

Sections: 1 flags, 2 setup, 3 data and tokenizer, 4 models and optimizer, 5 resume, 6 the loop, 7 final save.
"""
import contextlib
import math
import os
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

import builtin_data
import train_utils as tu
from data import DataError, EpochSampler, SFTDataset, get_batch, load_data, packed_text_data, sft_batch
from model import MiniGPT, load_model, masked_mean
from tokenizer import BPETokenizer


# ----------------------------------------------------------------------------- 1. flags
def parse_args(argv=None):
    p = tu.common_parser("Distil a larger teacher into a smaller student.", "distill",
                         lr=2e-3, max_steps=600, batch_size=32, seq_len=256, warmup_steps=50, eval_interval=100)
    p.add_argument("--teacher", required=True, help="the teacher's run directory (same tokenizer as the student)")
    p.add_argument("--task", default="pretrain", choices=["pretrain", "sft"],
                   help="pretrain: packed text (--data as train_pretrain.py); sft: conversations, assistant tokens only")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the distillation term (0: no teacher at all)")
    p.add_argument("--temperature", type=float, default=2.0, help="softens both distributions in the KL term")
    p.add_argument("--kd-loss", default="forward", choices=["forward", "reverse"],
                   help="forward: KL(teacher || student); reverse: KL(student || teacher)")
    p.add_argument("--teacher-topk", type=int, default=0, help="precompute the teacher's top-k log-probs for every "
                   "training position once and free the teacher (0: run the teacher in every step)")
    args = tu.finish_args(p.parse_args(argv), "distill")
    tu.check_flags(args, at_least=dict(alpha=0, teacher_topk=0), at_most=dict(alpha=1), above=dict(temperature=0))
    if not tu.has_checkpoint(args.teacher):
        raise FileNotFoundError(f"{args.teacher}: no teacher checkpoint (a run directory of train_pretrain.py or "
                                f"train_sft.py, trained with the tokenizer the student will use)")
    return args


# ----------------------------------------------------------------------------- the distillation loss
def kd_per_position(student_logits, teacher, temperature, kind="forward"):
    """KL between the teacher's and the student's next-token distributions at temperature T, per position (B, T).
    teacher: logits (B, T, V), or the precomputed (top-k log-probs, top-k ids), each (B, T, k). With top-k both
    distributions are compared over k + 1 outcomes: the teacher's k tokens, and "any other token" holding the rest of
    each one's mass. (Renormalising the teacher over its k tokens instead taught the student that the rest has no
    mass: on Tiny Shakespeare, k = 32, its held-out loss was 4.52 against 3.86 without a teacher.)"""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    if isinstance(teacher, tuple):
        top_logprobs, top_ids = teacher
        teacher, student = _with_rest(top_logprobs.float()), _with_rest(student.gather(-1, top_ids.long()))
    else:
        teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    if kind == "forward":
        return (teacher.exp() * (teacher - student)).sum(-1)   # sum_v p_t (log p_t - log p_s)
    return (student.exp() * (student - teacher)).sum(-1)       # sum_v p_s (log p_s - log p_t)


def _with_rest(logprobs):
    """(..., k) log-probs of k tokens -> (..., k + 1): the same, then log(1 - their total), the rest of the mass."""
    rest = torch.log1p(-logprobs.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))
    return torch.cat([logprobs, rest], dim=-1)


def main(argv=None):
    args = parse_args(argv)

    # ------------------------------------------------------------------------- 2. setup
    run = tu.setup(args)
    tu.prepare_run_dir(args, run)  # refuses a folder that holds a run, unless --resume or --overwrite

    # ------------------------------------------------------------------------- 3. data and tokenizer
    tok_path = os.path.join(args.out_dir, "tokenizer.json")
    if run.master:
        BPETokenizer.load(os.path.join(args.teacher, "tokenizer.json")).save(tok_path)  # the teacher's
    if run.ddp:
        torch.distributed.barrier()
    tokenizer = BPETokenizer.load(tok_path)
    if args.init_from:
        student_tok = BPETokenizer.load(os.path.join(args.init_from, "tokenizer.json"))
        if (student_tok.vocab_bytes, student_tok.special_tokens) != (tokenizer.vocab_bytes, tokenizer.special_tokens):
            raise ValueError(f"{args.init_from}: the student's tokenizer differs from the teacher's ({args.teacher}); "
                             f"distillation compares their distributions token by token")
    if args.task == "pretrain":  # packed blocks of text, as in pretraining
        train_ds, val_ds, val_tokens_per_byte = packed_text_data(args, run, tokenizer)
        batch_of = lambda dataset, indices: get_batch(dataset, indices)  # noqa: E731
    else:  # conversations; loss on assistant tokens only, as in SFT
        train_convs, val_convs, stats = load_data(args, "chat")
        if args.data == ["builtin"] and not args.val_data:
            val_convs = builtin_data.sft_conversations(split="heldout")
        train_ds = SFTDataset(train_convs, tokenizer, args.seq_len, seed=args.seed)
        val_ds = SFTDataset(val_convs, tokenizer, args.seq_len, seed=args.seed) if val_convs else train_ds
        if len(train_ds) == 0:
            raise DataError(f"{', '.join(args.data)}: no conversation has an assistant token within --seq-len {args.seq_len}")
        val_tokens_per_byte = None
        batch_of = lambda dataset, indices: sft_batch(dataset, indices, tokenizer.pad_id)  # noqa: E731
        if run.master:
            tu.write_json(os.path.join(args.out_dir, "dataset_stats.json"),
                          {**stats, "train": train_ds.stats(), "val": val_ds.stats()})
            print(f"data: {len(train_ds)} train conversations, {len(val_ds)} val")
    sampler = EpochSampler(len(train_ds), args.seed)

    # ------------------------------------------------------------------------- 4. models and optimizer
    if args.init_from:  # a student that has been trained before (say, a pretrained one for --task sft)
        student = load_model(args.init_from, run.device).train()
    else:  # made before the teacher is loaded, so --alpha 0 (no teacher) starts from the very same weights
        student = MiniGPT(tu.model_config(args, tokenizer.vocab_size)).to(run.device)
    config = student.config
    teacher = load_model(args.teacher, run.device).requires_grad_(False) if args.alpha > 0 else None  # eval mode
    if teacher is not None and teacher.config.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"{args.teacher}: the teacher's vocabulary ({teacher.config.vocab_size}) is not its tokenizer's "
                         f"({tokenizer.vocab_size})")
    optimizer = student.configure_optimizer(args.lr, args.weight_decay, device_type=run.device_type)
    if run.master:
        about = (f"teacher {teacher.num_params() / 1e6:.2f}M ({teacher.checkpoint}), {args.kd_loss} KL at temperature "
                 f"{args.temperature:g}, alpha {args.alpha:g}" if teacher is not None else "no teacher (--alpha 0)")
        print(f"student: {args.config}, {student.num_params() / 1e6:.2f}M parameters; {about}")
        tu.write_run_config(args, config, tokenizer)

    @torch.no_grad()
    def teacher_topk(dataset):
        """The teacher's top-k log-probs (at the temperature) and ids at every position of every sample, computed
        once: (B, T, k) lookups replace a teacher forward per step, and the teacher itself is freed."""
        values, ids = [], []
        for start in range(0, len(dataset), args.batch_size):
            x, _, _ = batch_of(dataset, list(range(start, min(start + args.batch_size, len(dataset)))))
            with tu.autocast(run):
                logprobs = F.log_softmax(teacher(x.to(run.device)).logits.float() / args.temperature, dim=-1)
            top = logprobs.topk(args.teacher_topk, dim=-1)
            lengths = [len(dataset.samples[i][0]) - 1 for i in range(start, start + x.shape[0])] \
                if args.task == "sft" else [x.shape[1]] * x.shape[0]
            values += [v[:n].to(torch.float16).cpu() for v, n in zip(top.values, lengths)]
            ids += [i[:n].to(torch.int32).cpu() for i, n in zip(top.indices, lengths)]
        return values, ids

    topk = None
    if args.teacher_topk and teacher is not None:
        topk = teacher_topk(train_ds)
        teacher = None  # no longer needed: every training position's teacher distribution is in `topk`
        if run.master:
            print(f"teacher top-{args.teacher_topk} precomputed for {len(train_ds)} samples; teacher freed")

    def teacher_targets(x, indices):
        """What the KL term compares with: the teacher's logits now, or its stored top-k padded to x's length."""
        if topk is None:
            with torch.no_grad(), tu.autocast(run):
                return teacher(x).logits
        T = x.shape[1]
        pad = lambda rows: torch.stack([F.pad(r, (0, 0, 0, T - r.shape[0])) for r in rows]).to(run.device)  # noqa: E731
        return pad([topk[0][i] for i in indices]), pad([topk[1][i] for i in indices])

    # ------------------------------------------------------------------------- 5. resume
    ckpt = tu.resume_training(args, run, {"model": student}, optimizer)  # --resume: weights, optimizer, RNG (else None)
    raw_student, student = student, tu.wrap_model(student, run, args)  # raw_student: the weights; student: what runs
    log = tu.MetricsLog(args.out_dir, enabled=run.master, tensorboard=args.tensorboard,
                        resume_step=ckpt["step"] if ckpt else None)
    if args.inspect:
        x, y, mask = (t.to(run.device) for t in batch_of(train_ds, sampler.take(0, args.batch_size)))
        with tu.autocast(run):
            out = student(x, y, mask)
        kd = kd_per_position(out.logits, teacher_targets(x, sampler.take(0, args.batch_size)), args.temperature,
                             args.kd_loss) if args.alpha > 0 else torch.zeros_like(mask, dtype=torch.float)
        print(f"batch {tuple(x.shape)}, {int(mask.sum())} positions carry loss: cross-entropy {out.loss.item():.4f}, "
              f"KL to the teacher {masked_mean(kd, mask).item():.4f}; exiting (--inspect)")
        return None

    # ------------------------------------------------------------------------- 6. the loop
    # The loop's state, declared together. best_val_loss: the student's lowest validation cross-entropy after step 0
    # (lower is better; what it is judged by, with or without a teacher), at best_step. Step 0 is the baseline.
    start_step = step = ckpt["step"] if ckpt else 0
    best_val_loss, best_step, baseline_val_loss, evals_without_improvement = tu.best_so_far(ckpt)
    micro_batch, grad_accum, world_size = args.batch_size, args.grad_accum, run.world_size
    temperature_squared = args.temperature ** 2  # keeps the KL term's gradient scale as the temperature changes
    trained = [p for group in optimizer.param_groups for p in group["params"]]  # what the optimizer updates
    ctrl_c = tu.StopSignal().install()  # from here the first Ctrl+C asks the loop to save and stop
    bad_steps = tu.BadSteps(args)  # non-finite losses: skip the update; stop after --max-bad-steps in a row
    eta = tu.ETA(args, run, step)  # after the first steps: how long the whole run will take on this machine
    started_at, t_last, steps_since_log = time.time(), time.time(), 0
    bar = tqdm(total=args.max_steps, initial=step, disable=not run.master, dynamic_ncols=True, unit="step", desc="train")
    student.train()
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

        # --- once in a while: the student's cross-entropy on the first --eval-iters validation batches (each rank its
        # share; the same batches every time), keep the best, save and plot (rank 0)
        evaluate_now = not resumed_here and (step % args.eval_interval == 0 or last_step or out_of_time)
        improved = early_stop = False
        if evaluate_now:
            student.eval()
            losses = []
            with torch.no_grad():
                for j in range(run.rank, args.eval_iters, world_size):
                    indices = [(j * args.batch_size + i) % len(val_ds) for i in range(args.batch_size)]
                    x, y, loss_mask = (t.to(run.device) for t in batch_of(val_ds, indices))
                    with tu.autocast(run):
                        losses.append(raw_student(x, y, loss_mask).loss.item())
            student.train()
            val_loss = tu.all_reduce_mean(sum(losses) / max(1, len(losses)), run)
            improved, baseline_val_loss, evals_without_improvement = tu.track_best(
                step, val_loss, best_val_loss, baseline_val_loss, evals_without_improvement, args.early_stop_delta)
            if improved:
                best_val_loss, best_step = val_loss, step
            if run.master:
                row = {"step": step, "val_loss": val_loss, "memory_mb": tu.peak_memory_mb(run)}
                if val_tokens_per_byte is not None:
                    row["val_bpb"] = val_loss / math.log(2) * val_tokens_per_byte  # bits per byte of text
                log.log(row)
                bpb = f", bpb {row['val_bpb']:.3f}" if "val_bpb" in row else ""
                print(f"\nstep {step}: val loss {val_loss:.4f}{bpb}{' (best)' if improved else ''}")
            if step == 0:
                eta.eval_done()
            early_stop = args.early_stop_patience > 0 and evals_without_improvement >= args.early_stop_patience

        # --- save ckpt_latest.pt at each eval, every --save-interval steps and before stopping; ckpt_best.pt when
        # improved. The checkpoint is a plain dict (torch.load(weights_only=True) reads it), written atomically.
        save_now = evaluate_now or stop_now or (step > start_step and args.save_interval and step % args.save_interval == 0)
        if save_now and run.master:
            checkpoint = {
                "model": raw_student.state_dict(), "lora": None, "optimizer": optimizer.state_dict(), "step": step,
                "best_val_loss": best_val_loss, "best_step": best_step, "baseline_val_loss": baseline_val_loss,
                "evals_without_improvement": evals_without_improvement, "rng": tu.rng_state(),
                "model_config": raw_student.config.to_dict(), "args": tu.plain_args(args),
                "scaler": run.scaler.state_dict(),  # the fp16 loss scale (empty unless fp16 on CUDA)
            }
            tu.save_run(args, checkpoint, is_best=improved)
            if evaluate_now and not args.no_plot:
                tu.plot_metrics([args.out_dir], os.path.join(args.out_dir, "plots", "loss_curve_latest.png"),
                                keys=(("train_loss", "ce_loss", "val_loss"), ("kd_loss",), ("val_bpb",), ("lr",)))
        if evaluate_now:
            t_last, steps_since_log = time.time(), 0  # samples/s measures training, not evaluation
        if early_stop and run.master:
            print(f"early stop: no val improvement > {args.early_stop_delta} in {args.early_stop_patience} evals")
        if stop_now and run.master:
            tu.print_saved_for_resume(args, step)
        if last_step or stop_now or early_stop or out_of_time:
            break

        # --- one training step: grad_accum micro-batches, their gradients averaged
        # loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(student, data)
        lr = tu.get_lr(step, args)  # warmup, then cosine down to --min-lr
        for group in optimizer.param_groups:  # lr_scale: e.g. PPO's critic learns faster
            group["lr"] = lr * group.get("lr_scale", 1.0)
        while True:  # a CUDA out-of-memory error halves the micro-batch and retries (the same samples per step)
            try:
                train_loss = ce_loss = kd_loss = 0.0
                for micro in range(grad_accum):
                    # one deterministic sample stream, as in pretraining: each (step, micro-step, rank) its own slice
                    position = (step * grad_accum * world_size + micro * world_size + run.rank) * micro_batch
                    indices = sampler.take(position, micro_batch)
                    x, y, loss_mask = (t.to(run.device) for t in batch_of(train_ds, indices))  # (B, T) each
                    sync = contextlib.nullcontext() if not run.ddp or micro == grad_accum - 1 else student.no_sync()
                    with sync:  # under DDP, gradients are averaged across ranks only on the last micro-step
                        with tu.autocast(run):
                            out = student(x, y, loss_mask)  # out.loss: cross-entropy with the data's tokens
                        if args.alpha > 0:
                            kd = kd_per_position(out.logits, teacher_targets(x, indices), args.temperature, args.kd_loss)
                            kd = masked_mean(kd, loss_mask)  # (B, T) -> one number, over the same positions as the CE
                        else:
                            kd = torch.zeros((), device=run.device)
                        loss = args.alpha * temperature_squared * kd + (1 - args.alpha) * out.loss + out.aux_loss
                        run.scaler.scale(loss / grad_accum).backward()  # / grad_accum: the mean over micro-steps
                    train_loss += loss.item() / grad_accum  # what is optimised (and logged)
                    ce_loss += out.loss.item() / grad_accum
                    kd_loss += kd.item() / grad_accum
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
            samples_per_sec = micro_batch * grad_accum * world_size * steps_since_log / (time.time() - t_last)
            t_last, steps_since_log = time.time(), 0
            bar.set_postfix(loss=f"{train_loss:.4f}", ce=f"{ce_loss:.4f}")
            log.log({"step": step, "train_loss": train_loss, "ce_loss": tu.all_reduce_mean(ce_loss, run),
                     "kd_loss": tu.all_reduce_mean(kd_loss, run), "lr": lr, "grad_norm": grad_norm,
                     "samples_per_sec": samples_per_sec, "memory_mb": tu.peak_memory_mb(run)})
    bar.close()
    ctrl_c.restore()

    # ------------------------------------------------------------------------- 7. final save and plot
    if run.master:
        if not stop_now:  # ended by its own rule (steps, early stop, time budget), not Ctrl+C or the memory guard:
            tu.write_json(os.path.join(args.out_dir, tu.DONE_FILE), {"step": step})  # `make` reuses a finished run
        print(f"done: step {step}; {tu.best_summary(best_step, best_val_loss, baseline_val_loss)}; "
              f"run directory {args.out_dir}")
    return best_val_loss


if __name__ == "__main__":
    tu.cli(main)
