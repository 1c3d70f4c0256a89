"""
Reward model: a MiniGPT backbone (from SFT) with a scalar head, trained so the chosen response of each pair scores
higher than the rejected one. PPO then optimises a policy against it.

    python train_reward.py                            # from checkpoints/sft_tiny, on the built-in preference pairs
    python train_reward.py --data hh-rlhf.jsonl.gz --freeze-backbone 2 --margin 0.5
    python train_reward.py --score "What is 2 plus 3?" "2 plus 3 is 5."     # print a reward and exit

The reward is the head's output at the last real token of prompt+response (the response's <|im_end|>), where
the whole sequence has been read. Loss (Bradley-Terry): -log sigmoid(r_chosen - r_rejected - margin).

Sections: 1 flags, 2 setup, 3 data and tokenizer, 4 model and optimizer, 5 resume, 6 the loop, 7 final save.
"""
import argparse
import contextlib
import os
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

import builtin_data
import train_utils as tu
from data import EpochSampler, PairDataset, load_data, pad_sequences, pair_batch, response_targets
from model import load_value_model, values_at_last_token as rewards_at_last_token
from tokenizer import BPETokenizer


# ----------------------------------------------------------------------------- 1. flags
def parse_args(argv=None):
    # lr 1e-3 with --likelihood (held-out pairs 0.99 at 1e-3 on one SFT model), 3e-4 without (the classic head).
    # eval_iters 32 x 16 covers all 508 built-in held-out pairs.
    p = tu.common_parser("Train a reward model on preference pairs.", "reward",
                         lr=None, max_steps=300, batch_size=16, seq_len=256, warmup_steps=20, eval_interval=50,
                         eval_iters=32, weight_decay=0.0)
    p.add_argument("--margin", type=float, default=0.0, help="required reward gap: -log sigmoid(r_c - r_r - margin)")
    p.add_argument("--likelihood", action=argparse.BooleanOptionalAction, default=True,
                   help="reward = head + a learned weight (from 1) x the reply's log-likelihood under the model's own "
                        "language-model head; --no-likelihood: the head alone, as a classic reward model")
    p.add_argument("--nll-coef", type=float, default=None,
                   help="with --likelihood: add this x the chosen replies' NLL per token to the loss (default 1): the "
                        "language model whose likelihood is in the reward learns to answer as the chosen replies do")
    p.add_argument("--freeze-backbone", type=int, nargs="?", const=0, default=None, metavar="N",
                   help="train only the head, the final norm and the top N blocks (no value: the head only)")
    p.add_argument("--max-prompt-len", type=int, default=None, help="prompt tokens kept when a pair is too long")
    p.add_argument("--score", nargs=2, metavar=("PROMPT", "RESPONSE"), default=None,
                   help="print the reward of --out-dir's model for one prompt and response, then exit")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = 1e-3 if args.likelihood else 3e-4
    if args.nll_coef is None:
        args.nll_coef = 1.0 if args.likelihood else 0.0
    args = tu.finish_args(args, "reward")
    tu.check_flags(args, at_least=dict(freeze_backbone=0, max_prompt_len=1, nll_coef=0))
    if args.nll_coef and not args.likelihood:
        raise ValueError("--nll-coef: the NLL trains the language model whose likelihood is part of the reward; "
                         "with --no-likelihood there is none (leave --nll-coef out)")
    if args.score is None:
        tu.default_init_from(args, "sft", "train_sft.py")
    return args


def reward_loss(chosen_rewards, rejected_rewards, margin=0.0):
    """Bradley-Terry (Ouyang et al. 2022, eq. 1), with the optional margin of Llama 2: per-pair losses (B,)."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards - margin)


def reward_metrics(loss, chosen_rewards, rejected_rewards, prefix=""):
    """Logged per step (and per eval, prefixed eval_); `loss` is the batch's loss (a scalar)."""
    rewards = torch.cat([chosen_rewards, rejected_rewards]).detach()
    return {f"{prefix}loss": loss.item(),
            f"{prefix}accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
            f"{prefix}rewards/chosen": chosen_rewards.mean().item(),
            f"{prefix}rewards/rejected": rejected_rewards.mean().item(),
            f"{prefix}reward_mean": rewards.mean().item(),
            f"{prefix}reward_std": rewards.std().item() if rewards.numel() > 1 else 0.0,
            f"{prefix}margin": (chosen_rewards - rejected_rewards).mean().item()}


@torch.no_grad()
def score(run_dir, prompt, response, device="cpu"):
    """The reward a trained reward model gives one (prompt, response)."""
    model = load_value_model(run_dir, device, trained_head=True)
    tokenizer = BPETokenizer.load(os.path.join(run_dir, "tokenizer.json"))
    messages = [{"role": "user", "content": prompt}]
    prompt_length = len(tokenizer.apply_chat_template(messages, add_generation_prompt=True)[0])
    ids = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}])[0]
    ids = ids[:-len(tokenizer.encode("\n"))]  # end at the response's <|im_end|>, as in training
    ids, lengths = pad_sequences([ids], tokenizer.pad_id)
    return rewards_at_last_token(model(ids.to(device), torch.tensor([prompt_length]))[0], lengths).item()


def main(argv=None):
    args = parse_args(argv)
    if args.score:
        print(f"reward {score(args.out_dir, *args.score):+.4f}")
        return None

    # ------------------------------------------------------------------------- 2. setup
    run = tu.setup(args)
    tu.prepare_run_dir(args, run)  # refuses a folder that holds a run, unless --resume or --overwrite

    # ------------------------------------------------------------------------- 3. data and tokenizer
    tokenizer = tu.copy_tokenizer(args, run)
    train_pairs, val_pairs, stats = load_data(args, "pair")
    if args.data == ["builtin"] and not args.val_data:
        val_pairs = builtin_data.preference_pairs(split="heldout")  # pairs on questions never trained on
    # the reward model reads whole sequences (no input/target shift), so a pair holds at most seq_len tokens
    train_ds = PairDataset(train_pairs, tokenizer, args.seq_len - 1, args.max_prompt_len)
    val_ds = PairDataset(val_pairs, tokenizer, args.seq_len - 1, args.max_prompt_len) if val_pairs else train_ds
    sampler = EpochSampler(len(train_ds), args.seed)
    if run.master:
        tu.write_json(os.path.join(args.out_dir, "dataset_stats.json"), {**stats, "train": train_ds.stats(), "val": val_ds.stats()})
        print(f"data: {len(train_ds)} train pairs ({train_ds.truncated} truncated), {len(val_ds)} val pairs")

    # ------------------------------------------------------------------------- 4. model and optimizer
    model = load_value_model(args.init_from, run.device, likelihood=args.likelihood).train()  # SFT backbone + a fresh head
    if args.freeze_backbone is not None:
        model.freeze_backbone(args.freeze_backbone)
    optimizer = model.configure_optimizer(args.lr, args.weight_decay, device_type=run.device_type)
    if run.master:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"reward model: {model.num_params() / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trained) from "
              f"{model.checkpoint}")
        tu.write_run_config(args, model.config, tokenizer)

    # ------------------------------------------------------------------------- 5. resume
    ckpt = tu.resume_training(args, run, {"model": model}, optimizer)  # --resume: weights, optimizer, RNG (else None)
    raw_model, model = model, tu.wrap_model(model, run, args)  # raw_model: the weights; model: what the loop calls
    log = tu.MetricsLog(args.out_dir, enabled=run.master, tensorboard=args.tensorboard,
                        resume_step=ckpt["step"] if ckpt else None)
    if args.inspect:
        return inspect_first_batch(args, run, model, raw_model, optimizer, train_ds, sampler, tokenizer)

    # ------------------------------------------------------------------------- 6. the loop
    # The loop's state, declared together. best_val_loss: the lowest held-out Bradley-Terry loss after step 0 (lower
    # is better), at best_step. Step 0 (an untrained head, accuracy near chance) is the baseline, never the best.
    start_step = step = ckpt["step"] if ckpt else 0
    best_val_loss, best_step, baseline_val_loss, evals_without_improvement = tu.best_so_far(ckpt)
    micro_batch, grad_accum, world_size = args.batch_size, args.grad_accum, run.world_size
    trained = [p for group in optimizer.param_groups for p in group["params"]]  # what the optimizer updates
    ctrl_c = tu.StopSignal().install()  # from here the first Ctrl+C asks the loop to save and stop
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

        # --- once in a while: evaluate the held-out pairs (each rank its share), keep the best, save and plot (rank 0)
        evaluate_now = not resumed_here and (step % args.eval_interval == 0 or last_step or out_of_time)
        improved = early_stop = False
        if evaluate_now:
            model.eval()
            chosen, rejected = [], []
            with torch.no_grad():
                for j in range(run.rank, args.eval_iters, world_size):
                    indices = list(range(j * args.batch_size, min((j + 1) * args.batch_size, len(val_ds))))
                    if not indices:
                        break
                    ids, lengths, prompt_lengths = (t.to(run.device) for t in pair_batch(val_ds, indices, tokenizer.pad_id))
                    with tu.autocast(run):  # (2B,): chosen rows, then rejected
                        rewards = rewards_at_last_token(raw_model(ids, prompt_lengths)[0], lengths)
                    chosen.append(rewards[:len(indices)])
                    rejected.append(rewards[len(indices):])
            model.train()
            chosen, rejected = torch.cat(chosen), torch.cat(rejected)
            metrics = reward_metrics(reward_loss(chosen, rejected, args.margin).mean(), chosen, rejected, "eval_")
            metrics = {k: tu.all_reduce_mean(v, run) for k, v in metrics.items()}  # loss, accuracy, margin, rewards
            val_loss = metrics["eval_loss"]
            improved, baseline_val_loss, evals_without_improvement = tu.track_best(
                step, val_loss, best_val_loss, baseline_val_loss, evals_without_improvement, args.early_stop_delta)
            if improved:
                best_val_loss, best_step = val_loss, step
            if run.master:
                log.log({"step": step, "val_loss": val_loss, **metrics, "memory_mb": tu.peak_memory_mb(run)})
                print(f"\nstep {step}: val loss {val_loss:.4f}, pairwise accuracy {metrics['eval_accuracy']:.3f}, "
                      f"margin {metrics['eval_margin']:.3f}, rewards {metrics['eval_reward_mean']:+.3f} +- "
                      f"{metrics['eval_reward_std']:.3f}{' (best)' if improved else ''}")
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
            }
            tu.save_run(args, checkpoint, is_best=improved)
            if evaluate_now and not args.no_plot:
                tu.plot_metrics([args.out_dir], os.path.join(args.out_dir, "plots", "loss_curve_latest.png"),
                                keys=(("loss", "val_loss"), ("accuracy", "eval_accuracy"),
                                      ("margin", "eval_margin", "eval_reward_std")))
        if evaluate_now:
            t_last, steps_since_log = time.time(), 0  # pairs/s measures training, not evaluation
        if early_stop and run.master:
            print(f"early stop: no val improvement > {args.early_stop_delta} in {args.early_stop_patience} evals")
        if stop_now and run.master:
            tu.print_saved_for_resume(args, step)
        if last_step or stop_now or early_stop or out_of_time:
            break

        # --- one training step: grad_accum micro-batches of micro_batch pairs, their gradients averaged
        lr = tu.get_lr(step, args)  # warmup, then cosine down to --min-lr
        for group in optimizer.param_groups:  # lr_scale: e.g. PPO's critic learns faster
            group["lr"] = lr * group.get("lr_scale", 1.0)
        while True:  # a CUDA out-of-memory error halves the micro-batch and retries (the same pairs per step)
            try:
                metrics = {}
                for micro in range(grad_accum):
                    position = (step * grad_accum * world_size + micro * world_size + run.rank) * micro_batch
                    ids, lengths, prompt_lengths = (t.to(run.device) for t in pair_batch(
                        train_ds, sampler.take(position, micro_batch), tokenizer.pad_id))  # ids (2B, T)
                    sync = contextlib.nullcontext() if not run.ddp or micro == grad_accum - 1 else model.no_sync()
                    with sync:  # under DDP, gradients are averaged across ranks only on the last micro-step
                        with tu.autocast(run):
                            values, aux_loss, reply_logprobs = model(ids, prompt_lengths)  # chosen rows, then rejected
                        rewards = rewards_at_last_token(values, lengths)  # (2B,): the value at each last token
                        chosen_rewards, rejected_rewards = rewards[:micro_batch], rewards[micro_batch:]
                        loss = reward_loss(chosen_rewards, rejected_rewards, args.margin).mean() + aux_loss  # optimised, logged
                        if args.nll_coef:  # the chosen replies' NLL per token (as DPO's rpo_alpha, GRM's SFT regulariser)
                            reply_mask = response_targets(ids, lengths, prompt_lengths)[2][:micro_batch]  # (B, T-1)
                            nll = -(reply_logprobs[:micro_batch] * reply_mask).sum() / reply_mask.sum().clamp(min=1)
                            loss = loss + args.nll_coef * nll
                            metrics["nll"] = metrics.get("nll", 0.0) + nll.item() / grad_accum
                        run.scaler.scale(loss / grad_accum).backward()  # / grad_accum: the mean over micro-steps
                    for k, v in reward_metrics(loss, chosen_rewards, rejected_rewards).items():
                        metrics[k] = metrics.get(k, 0.0) + v / grad_accum
                break
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                micro_batch, grad_accum = tu.halve_micro_batch(micro_batch, grad_accum, run, log, step)
        metrics = {k: tu.all_reduce_mean(v, run) for k, v in metrics.items()}
        if bad_steps.skip(metrics["loss"], step, optimizer, log):  # non-finite: no update
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
            pairs_per_sec = micro_batch * grad_accum * world_size * steps_since_log / (time.time() - t_last)
            t_last, steps_since_log = time.time(), 0
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.2f}")
            log.log({"step": step, **metrics, "lr": lr, "grad_norm": grad_norm, "pairs_per_sec": pairs_per_sec,
                     "memory_mb": tu.peak_memory_mb(run)})
    bar.close()
    ctrl_c.restore()

    # ------------------------------------------------------------------------- 7. final save and plot
    if run.master:
        if not stop_now:  # ended by its own rule (steps, early stop, time budget), not Ctrl+C or the memory guard:
            tu.write_json(os.path.join(args.out_dir, tu.DONE_FILE), {"step": step})  # `make` reuses a finished run
        evals = {r["step"]: r for r in tu.read_metrics(log.path) if "eval_accuracy" in r}
        best = evals.get(best_step, evals[max(evals)])
        print(f"done: step {step}; held-out pairwise accuracy {evals[min(evals)]['eval_accuracy']:.3f} -> "
              f"{best['eval_accuracy']:.3f}; {tu.best_summary(best_step, best_val_loss, baseline_val_loss)}; "
              f"run directory {args.out_dir}")
    return best_val_loss


def inspect_first_batch(args, run, model, raw_model, optimizer, train_ds, sampler, tokenizer):
    """--inspect: the first pair and where its rewards are read, one optimizer step, gradient norms."""
    indices = sampler.take(0, args.batch_size)
    ids, lengths, prompt_lengths = (t.to(run.device) for t in pair_batch(train_ds, indices, tokenizer.pad_id))
    B = len(indices)
    for name, row in (("chosen", 0), ("rejected", B)):
        last = int(lengths[row]) - 1
        print(f"{name}: {tokenizer.decode(ids[row, :last + 1].tolist())!r}\n  reward read at position {last} "
              f"(token {tokenizer.id_to_token(int(ids[row, last]))!r})")
    with tu.autocast(run):
        values = model(ids, prompt_lengths).values
    rewards = rewards_at_last_token(values, lengths)
    losses = reward_loss(rewards[:B], rewards[B:], args.margin)
    losses.mean().backward()
    print(f"loss {losses.mean().item():.4f} (log 2 = 0.6931 for equal rewards)")
    for name, norm in tu.grad_norms_by_group(raw_model).items():
        print(f"  grad norm {name:<12} {norm:.4e}")
    optimizer.step()
    print("one optimizer step done; exiting (--inspect)")


if __name__ == "__main__":
    tu.cli(main)
