"""
Direct preference optimisation: make the policy prefer the chosen response over the rejected one, relative to a
frozen reference (the SFT model), with no reward model and no sampling.

    python train_dpo.py                               # from checkpoints/sft_tiny, on the built-in preference pairs
    python train_dpo.py --data hh-rlhf.jsonl.gz --beta 0.1 --max-steps 1000
    python train_dpo.py --loss-type ipo --beta 0.5    # or --label-smoothing 0.1 for conservative DPO
    python train_dpo.py --precompute-ref              # reference log-probs once up front: half the forward passes

Sections: 1 flags, 2 setup, 3 data and tokenizer, 4 models and optimizer, 5 resume, 6 the loop, 7 final save.
"""
import contextlib
import os
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

import builtin_data
import train_utils as tu
from data import EpochSampler, PairDataset, load_data, pair_batch, regression_suite, response_targets
from generate import TextGenerator, answer_accuracy
from model import load_model, lora_disabled, lora_state_dict, token_logprobs


# ----------------------------------------------------------------------------- 1. flags
def parse_args(argv=None):
    # lr: TRL's default is 5e-7 to 1e-6 for billion-parameter models; a 1M-parameter model needs far more to move.
    p = tu.common_parser("Direct preference optimisation on preference pairs.", "dpo",
                         lr=1e-4, max_steps=200, batch_size=16, seq_len=256, warmup_steps=10, eval_interval=50,
                         eval_iters=10, weight_decay=0.0)
    p.add_argument("--beta", type=float, default=0.1, help="strength of the KL constraint to the reference")
    p.add_argument("--loss-type", default="sigmoid", choices=["sigmoid", "ipo"])
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="assumed fraction of flipped labels (conservative DPO, sigmoid loss only)")
    # 1, not TRL's None: plain DPO lowered the tiny model's chosen answers too and its held-out accuracy stayed at
    # 0.47, against 0.75-0.79 with the NLL term (BENCHMARKS.md); --rpo-alpha 0 is plain DPO
    p.add_argument("--rpo-alpha", type=float, default=1.0, help="add alpha x the NLL of the chosen responses (RPO, "
                   "TRL's rpo_alpha): keeps DPO from lowering the chosen answers' likelihood along with the rejected")
    p.add_argument("--precompute-ref", action="store_true",
                   help="compute the reference log-probs once before training and free the reference model")
    p.add_argument("--max-prompt-len", type=int, default=None, help="prompt tokens kept when a pair is too long "
                   "(default: half of --seq-len; the end of the prompt is kept)")
    p.add_argument("--eval-prompts", default=None, help="JSONL of {\"prompt\", \"expected\"} answered greedily at "
                   "each eval (default: the built-in held-out questions when training on the built-in data)")
    p.add_argument("--eval-max-new-tokens", type=int, default=48)
    tu.add_lora_flags(p)
    args = tu.finish_args(p.parse_args(argv), "dpo")
    tu.check_flags(args, above=dict(beta=0), at_least=dict(label_smoothing=0, rpo_alpha=0, eval_max_new_tokens=1,
                                                            max_prompt_len=1), below=dict(label_smoothing=0.5))
    tu.check_lora_flags(args)
    tu.default_init_from(args, "sft", "train_sft.py")
    return args


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, loss_type="sigmoid", label_smoothing=0.0):
    """Per-pair losses and the implicit rewards, from summed response log-probs (B,) each.

    The implicit reward of a response is beta * (log pi(y|x) - log pi_ref(y|x)); h is the chosen-minus-rejected
    difference of the log-ratios.
    Example: policy chosen -1, rejected -3, reference -2 and -2, beta 0.1 -> rewards +0.1 and -0.1,
    loss -log sigmoid(0.2) = 0.598"""
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss_type == "sigmoid":
        # DPO (Rafailov et al. 2023, eq. 7): -log sigmoid(beta h); conservative DPO (Mitchell 2023) mixes in the
        # flipped label with weight eps: -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2  # IPO (Azar et al. 2023, eq. 17): regress h to 1/(2 beta)
    else:
        raise ValueError(f"unknown --loss-type {loss_type}")
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def chosen_nll(chosen_logps, chosen_tokens, average=False):
    """RPO's extra term (Pang et al. 2024; TRL's rpo_alpha): the negative log-likelihood per token of the chosen
    responses, over the whole batch. chosen_logps: summed (or, with average, per-token) log-probs (B,)."""
    return -chosen_logps.mean() if average else -chosen_logps.sum() / chosen_tokens.sum()


def sequence_logprobs(model, ids, lengths, prompt_lengths, average=False):
    """Summed log-probs of the response tokens of each row (prompt and padding carry nothing), (rows,).
    average=True divides by the response length (IPO scores per token)."""
    x, y, response_mask = response_targets(ids, lengths, prompt_lengths)
    logprobs = token_logprobs(model(x).logits, y) * response_mask  # (rows, T)
    total = logprobs.sum(-1)
    return total / response_mask.sum(-1).clamp(min=1) if average else total


def pair_metrics(loss, chosen_rewards, rejected_rewards, policy_chosen, policy_rejected, prefix=""):
    """The numbers TRL's DPOTrainer logs, under the same names; `loss` is the batch's loss (a scalar)."""
    return {f"{prefix}loss": loss.item(),
            f"{prefix}rewards/chosen": chosen_rewards.mean().item(),
            f"{prefix}rewards/rejected": rejected_rewards.mean().item(),
            f"{prefix}rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
            f"{prefix}rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
            f"{prefix}logps/chosen": policy_chosen.detach().mean().item(),
            f"{prefix}logps/rejected": policy_rejected.detach().mean().item()}


def main(argv=None):
    args = parse_args(argv)
    average_logprobs = args.loss_type == "ipo"  # IPO's log-ratios are per token (as in TRL)

    # ------------------------------------------------------------------------- 2. setup
    run = tu.setup(args)
    tu.prepare_run_dir(args, run)  # refuses a folder that holds a run, unless --resume or --overwrite

    # ------------------------------------------------------------------------- 3. data and tokenizer
    tokenizer = tu.copy_tokenizer(args, run)
    train_pairs, val_pairs, stats = load_data(args, "pair")
    builtin = args.data == ["builtin"] and not args.val_data
    if builtin:
        val_pairs = builtin_data.preference_pairs(split="heldout")  # pairs on questions never trained on
    train_ds = PairDataset(train_pairs, tokenizer, args.seq_len, args.max_prompt_len)
    val_ds = PairDataset(val_pairs, tokenizer, args.seq_len, args.max_prompt_len) if val_pairs else train_ds
    suite = regression_suite(args.eval_prompts) if builtin or args.eval_prompts else []
    sampler = EpochSampler(len(train_ds), args.seed)
    if run.master:
        tu.write_json(os.path.join(args.out_dir, "dataset_stats.json"),
                      {**stats, "train": train_ds.stats(), "val": val_ds.stats(), "regression_suite": len(suite)})
        print(f"data: {len(train_ds)} train pairs ({train_ds.truncated} truncated), {len(val_ds)} val pairs")

    # ------------------------------------------------------------------------- 4. models and optimizer
    policy = tu.apply_lora(load_model(args.init_from, run.device).train(), args, run)
    # the frozen reference; with LoRA it is the policy itself with its adapters off (no second copy of the model)
    reference = policy if args.lora_rank else load_model(args.init_from, run.device).requires_grad_(False)
    optimizer = policy.configure_optimizer(args.lr, args.weight_decay, device_type=run.device_type)

    @torch.no_grad()
    def reference_logprobs(dataset, indices):
        ids, lengths, prompt_lengths = (t.to(run.device) for t in pair_batch(dataset, indices, tokenizer.pad_id))
        training, _ = reference.training, reference.eval()  # no dropout in the reference
        with tu.autocast(run), lora_disabled(reference):
            logprobs = sequence_logprobs(reference, ids, lengths, prompt_lengths, average_logprobs).float()
        reference.train(training)
        return logprobs

    cached_ref = {}
    if args.precompute_ref:
        # one pass of the reference over every pair, then the reference is freed: each step runs only the policy
        for name, dataset in (("train", train_ds), ("val", val_ds)):
            rows = [reference_logprobs(dataset, list(range(i, min(i + args.batch_size, len(dataset)))))
                    for i in range(0, len(dataset), args.batch_size)]
            n = len(dataset)
            cached_ref[name] = torch.stack([torch.cat([r[:len(r) // 2] for r in rows]),
                                            torch.cat([r[len(r) // 2:] for r in rows])], dim=1)  # (n, 2)
            assert cached_ref[name].shape == (n, 2)
        del reference
        if run.master:
            print(f"reference log-probs precomputed for {len(train_ds)} + {len(val_ds)} pairs; reference model freed")

    def ref_logprobs(name, dataset, indices):
        """(2B,) reference log-probs of chosen then rejected rows, cached or computed now."""
        if args.precompute_ref:
            cached = cached_ref[name][indices].to(run.device)
            return torch.cat([cached[:, 0], cached[:, 1]])
        return reference_logprobs(dataset, indices)

    if run.master:
        print(f"policy and reference: {policy.num_params() / 1e6:.2f}M parameters each, from {policy.checkpoint}; "
              f"{args.loss_type} loss, beta {args.beta}")
        tu.write_run_config(args, policy.config, tokenizer)

    # ------------------------------------------------------------------------- 5. resume
    ckpt = tu.resume_training(args, run, {"model": policy}, optimizer)  # --resume: weights, optimizer, RNG (else None)
    raw_policy, policy = policy, tu.wrap_model(policy, run, args)  # raw_policy: the weights; policy: what the loop calls
    lora = getattr(raw_policy, "lora", None)  # with --lora-rank the checkpoint keeps only the adapters
    log = tu.MetricsLog(args.out_dir, enabled=run.master, tensorboard=args.tensorboard,
                        resume_step=ckpt["step"] if ckpt else None)
    if args.inspect:
        return inspect_first_batch(args, run, policy, raw_policy, optimizer, train_ds, sampler, tokenizer, ref_logprobs)

    # ------------------------------------------------------------------------- 6. the loop
    # The loop's state, declared together. best_val_loss: the lowest held-out DPO loss after step 0 (lower is better),
    # at best_step. Step 0 (the SFT model: loss log 2, margin 0) is the baseline DPO is measured against, never the best.
    start_step = step = ckpt["step"] if ckpt else 0
    best_val_loss, best_step, baseline_val_loss, evals_without_improvement = tu.best_so_far(ckpt)
    micro_batch, grad_accum, world_size = args.batch_size, args.grad_accum, run.world_size
    trained = [p for group in optimizer.param_groups for p in group["params"]]  # what the optimizer updates
    ctrl_c = tu.StopSignal().install()  # from here the first Ctrl+C asks the loop to save and stop
    bad_steps = tu.BadSteps(args)  # non-finite losses: skip the update; stop after --max-bad-steps in a row
    eta = tu.ETA(args, run, step)  # after the first steps: how long the whole run will take on this machine
    started_at, t_last, steps_since_log = time.time(), time.time(), 0
    bar = tqdm(total=args.max_steps, initial=step, disable=not run.master, dynamic_ncols=True, unit="step", desc="train")
    policy.train()
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

        # --- once in a while: TRL's metrics over the held-out pairs (each rank its share, up to --eval-iters batches)
        # and greedy answers to the regression suite (rank 0); keep the best, save and plot (rank 0)
        evaluate_now = not resumed_here and (step % args.eval_interval == 0 or last_step or out_of_time)
        improved = early_stop = False
        if evaluate_now:
            policy.eval()
            sums, count = {}, 0
            with torch.no_grad():
                for j in range(run.rank, args.eval_iters, world_size):
                    indices = list(range(j * args.batch_size, min((j + 1) * args.batch_size, len(val_ds))))
                    if not indices:
                        break
                    ids, lengths, prompt_lengths = (t.to(run.device) for t in pair_batch(val_ds, indices, tokenizer.pad_id))
                    with tu.autocast(run):
                        logps = sequence_logprobs(raw_policy, ids, lengths, prompt_lengths, average_logprobs).float()
                    ref = ref_logprobs("val", val_ds, indices)  # (2B,): chosen rows, then rejected
                    n = len(indices)
                    losses, chosen_r, rejected_r = dpo_loss(logps[:n], logps[n:], ref[:n], ref[n:], args.beta,
                                                            args.loss_type, args.label_smoothing)
                    for k, v in pair_metrics(losses.mean(), chosen_r, rejected_r, logps[:n], logps[n:], "eval_").items():
                        sums[k] = sums.get(k, 0.0) + v * n
                    count += n
            policy.train()
            metrics = {k: tu.all_reduce_mean(v / max(1, count), run) for k, v in sums.items()}
            val_loss = metrics["eval_loss"]
            improved, baseline_val_loss, evals_without_improvement = tu.track_best(
                step, val_loss, best_val_loss, baseline_val_loss, evals_without_improvement, args.early_stop_delta)
            if improved:
                best_val_loss, best_step = val_loss, step
            if run.master:
                row = {"step": step, "val_loss": val_loss, **metrics, "memory_mb": tu.peak_memory_mb(run)}
                answer = ""
                if suite:  # greedy answers: does the policy now say what the chosen responses say?
                    with tu.autocast(run):
                        row["pass_rate"], examples = answer_accuracy(TextGenerator(raw_policy, tokenizer), suite,
                                                                     args.eval_max_new_tokens)
                    policy.train()  # the generator switched the model to eval mode
                    answer = f", answer accuracy {row['pass_rate']:.3f}; {examples[0][0][0]!r} -> {examples[0][1]!r}"
                log.log(row)
                print(f"\nstep {step}: val loss {val_loss:.4f}, preference accuracy "
                      f"{metrics['eval_rewards/accuracies']:.3f}, margin {metrics['eval_rewards/margins']:.3f}"
                      f"{answer}{' (best)' if improved else ''}")
            if step == 0:
                eta.eval_done()
            early_stop = args.early_stop_patience > 0 and evals_without_improvement >= args.early_stop_patience

        # --- save ckpt_latest.pt at each eval, every --save-interval steps and before stopping; ckpt_best.pt when
        # improved. The checkpoint is a plain dict (torch.load(weights_only=True) reads it), written atomically.
        save_now = evaluate_now or stop_now or (step > start_step and args.save_interval and step % args.save_interval == 0)
        if save_now and run.master:
            checkpoint = {
                "model": lora_state_dict(raw_policy) if lora else raw_policy.state_dict(), "lora": lora,
                "optimizer": optimizer.state_dict(), "step": step,
                "best_val_loss": best_val_loss, "best_step": best_step, "baseline_val_loss": baseline_val_loss,
                "evals_without_improvement": evals_without_improvement, "rng": tu.rng_state(),
                "model_config": raw_policy.config.to_dict(), "args": tu.plain_args(args),
                "scaler": run.scaler.state_dict(),  # the fp16 loss scale (empty unless fp16 on CUDA)
            }
            tu.save_run(args, checkpoint, is_best=improved)
            if evaluate_now and not args.no_plot:
                tu.plot_metrics([args.out_dir], os.path.join(args.out_dir, "plots", "loss_curve_latest.png"),
                                keys=(("loss", "val_loss"), ("rewards/accuracies", "eval_rewards/accuracies"),
                                      ("rewards/margins", "eval_rewards/margins", "rewards/chosen", "rewards/rejected"),
                                      ("pass_rate",)))
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
                    indices = sampler.take(position, micro_batch)
                    ids, lengths, prompt_lengths = (t.to(run.device) for t in pair_batch(train_ds, indices, tokenizer.pad_id))
                    ref = ref_logprobs("train", train_ds, indices)  # (2B,) no gradient: chosen rows, then rejected
                    sync = contextlib.nullcontext() if not run.ddp or micro == grad_accum - 1 else policy.no_sync()
                    with sync:  # under DDP, gradients are averaged across ranks only on the last micro-step
                        with tu.autocast(run):
                            logps = sequence_logprobs(policy, ids, lengths, prompt_lengths, average_logprobs)  # (2B,)
                        chosen_logps, rejected_logps = logps[:micro_batch], logps[micro_batch:]
                        losses, chosen_rewards, rejected_rewards = dpo_loss(
                            chosen_logps, rejected_logps, ref[:micro_batch], ref[micro_batch:], args.beta, args.loss_type,
                            args.label_smoothing)
                        loss = losses.mean()  # what is optimised (and logged as "loss")
                        if args.rpo_alpha:  # RPO: + alpha x the NLL of the chosen responses
                            nll = chosen_nll(chosen_logps, lengths[:micro_batch] - prompt_lengths[:micro_batch],
                                             average_logprobs)
                            loss = loss + args.rpo_alpha * nll
                            metrics["nll_loss"] = metrics.get("nll_loss", 0.0) + nll.item() / grad_accum
                        run.scaler.scale(loss / grad_accum).backward()  # / grad_accum: the mean over micro-steps
                    for k, v in pair_metrics(loss, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps).items():
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
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['rewards/accuracies']:.2f}")
            log.log({"step": step, **metrics, "lr": lr, "grad_norm": grad_norm, "pairs_per_sec": pairs_per_sec,
                     "memory_mb": tu.peak_memory_mb(run)})
    bar.close()
    ctrl_c.restore()

    # ------------------------------------------------------------------------- 7. final save and plot
    if run.master:
        if not stop_now:  # ended by its own rule (steps, early stop, time budget), not Ctrl+C or the memory guard:
            tu.write_json(os.path.join(args.out_dir, tu.DONE_FILE), {"step": step})  # `make` reuses a finished run
        evals = [r for r in tu.read_metrics(log.path) if "eval_rewards/accuracies" in r]
        print(f"done: step {step}; held-out preference accuracy {evals[0]['eval_rewards/accuracies']:.3f} -> "
              f"{evals[-1]['eval_rewards/accuracies']:.3f}; "
              f"{tu.best_summary(best_step, best_val_loss, baseline_val_loss, 'held-out DPO loss')}; "
              f"run directory {args.out_dir}")
    return best_val_loss


def inspect_first_batch(args, run, policy, raw_policy, optimizer, train_ds, sampler, tokenizer, ref_logprobs):
    """--inspect: the first pair with its response mask, the loss on it, one optimizer step, gradient norms."""
    indices = sampler.take(0, args.batch_size)
    ids, lengths, prompt_lengths = (t.to(run.device) for t in pair_batch(train_ds, indices, tokenizer.pad_id))
    x, y, response_mask = response_targets(ids, lengths, prompt_lengths)
    B = len(indices)
    for name, row in (("chosen", 0), ("rejected", B)):
        print(f"{name}: prompt {tokenizer.decode(ids[row, :prompt_lengths[row]].tolist())!r}")
        print(f"  scored response tokens: {tokenizer.decode(y[row][response_mask[row] == 1].tolist())!r}")
    with tu.autocast(run):
        logps = sequence_logprobs(policy, ids, lengths, prompt_lengths, args.loss_type == "ipo")
    ref = ref_logprobs("train", train_ds, indices)
    losses, _, _ = dpo_loss(logps[:B], logps[B:], ref[:B], ref[B:], args.beta, args.loss_type, args.label_smoothing)
    losses.mean().backward()
    print(f"loss {losses.mean().item():.4f} (log 2 = 0.6931 when the policy equals the reference)")
    for name, norm in tu.grad_norms_by_group(raw_policy).items():
        print(f"  grad norm {name:<12} {norm:.4e}")
    optimizer.step()
    print("one optimizer step done; exiting (--inspect)")


if __name__ == "__main__":
    tu.cli(main)
