"""
PPO (RLHF): sample answers from the policy, score them, and push the policy toward higher reward while a
per-token KL penalty keeps it near the reference (the SFT model).

    python train_ppo.py                               # actor from checkpoints/sft_tiny, reward from checkpoints/reward_tiny
    python train_ppo.py --reward builtin              # reward = the program that checks built-in answers (1 or 0)
    python train_ppo.py --adaptive-kl --target-kl 1.0 --max-steps 200

One update (a "step") = a rollout of --rollout-batch prompts, then --ppo-epochs passes over it in minibatches:
  1. rollout: sample responses with the KV cache; score each (reward model at the last token, or the checker)
  2. per token: logprobs of the actor (old), of the reference, and the critic's values, all without gradient
  3. rewards: -kl_coef * (old - ref) on every response token, plus the score on the last one
  4. advantages by GAE (gamma, lambda), whitened over the batch; returns = advantages + values
  5. minibatches: clipped policy loss + vf_coef * clipped value loss; stop the update early if approx KL > bound

Sections: 1 flags, 2 setup, 3 data and tokenizer, 4 models and optimizer, 5 resume, 6 the loop, 7 final save.
"""
import argparse
import os
import time

import torch
from tqdm import tqdm

import builtin_data
import train_utils as tu
from data import EpochSampler, load_data, prompt_records, response_targets, rollout_sequences
from generate import GenerationConfig, TextGenerator
from model import (answer_logprobs, entropy_from_logits, load_model, load_value_model, masked_mean,
                   values_at_last_token)
from tokenizer import BPETokenizer


# ----------------------------------------------------------------------------- 1. flags
def parse_args(argv=None):
    # lr 1e-5 (policy) and 3e-4 (value) are the usual RLHF settings for large models; a 1M-parameter policy barely
    # moves at 1e-5 in a few dozen updates, so the tiny default is 5e-5 (value lr stays 3e-4).
    # 150 updates (108 s on 2 cores, Zen 4): with the checker as reward, 40 reached 0.54 held out, 150 0.79
    p = tu.common_parser("PPO against a reward model or the built-in answer checker.", "ppo",
                         lr=5e-5, max_steps=150, warmup_steps=0, eval_interval=25, weight_decay=0.0, seq_len=256,
                         log_interval=1)
    p.add_argument("--reward", default="model", choices=["model", "builtin"],
                   help="model: a trained reward model (--reward-model); builtin: 1 for a correct built-in answer, else 0")
    p.add_argument("--reward-model", default=None, help="reward model run directory (default checkpoints/reward_<config>)")
    p.add_argument("--critic-from", default=None,
                   help="initialise the critic from this run (default: the reward model, or the SFT model with --reward builtin)")
    p.add_argument("--value-lr", type=float, default=3e-4)
    p.add_argument("--rollout-batch", type=int, default=64, help="prompts per rollout")
    p.add_argument("--minibatch-size", type=int, default=16)
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--compile-sampling", action="store_true",
                   help="torch.compile the rollouts' decode step (~10 s per batch size); it pays on GRPO's long rollouts, "
                        "hardly on PPO's 32-token ones, where training is 80%% of an update (BENCHMARKS.md)")
    p.add_argument("--temperature", type=float, default=1.0)
    # KL control as TRL's classic PPO defaults (adaptive, initial 0.2), with a target and horizon for tiny runs: TRL's
    # horizon of 10,000 samples barely moves the coefficient in 150 updates of 64. Target 3 nats a reply: the SFT model
    # hedges ("I don't know.") with p ~ 0.9 on 40% of questions, so answering them costs ~2-3 nats each; with the checker
    # as reward, target 1 held accuracy at 0.54-0.62, target 3 reached 0.79, no KL penalty 0.84 (at KL 6).
    p.add_argument("--kl-coef", type=float, default=0.2, help="initial per-token KL penalty coefficient")
    p.add_argument("--adaptive-kl", action=argparse.BooleanOptionalAction, default=True,
                   help="adapt kl-coef toward --target-kl (Ziegler et al. 2019); --no-adaptive-kl keeps it fixed")
    p.add_argument("--target-kl", type=float, default=3.0, help="target KL per response, for --adaptive-kl")
    p.add_argument("--kl-horizon", type=int, default=640, help="samples over which kl-coef moves by up to 20%%")
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--lam", type=float, default=0.95)
    p.add_argument("--cliprange", type=float, default=0.2)
    p.add_argument("--cliprange-value", type=float, default=0.2)
    p.add_argument("--vf-coef", type=float, default=0.1)
    p.add_argument("--max-approx-kl", type=float, default=0.1,
                   help="end an update's epochs early once a minibatch's approximate KL exceeds this")
    p.add_argument("--eval-batch", type=int, default=128, help="held-out prompts scored at each eval")
    args = tu.finish_args(p.parse_args(argv), "ppo")
    tu.check_flags(args, at_least=dict(rollout_batch=1, minibatch_size=1, ppo_epochs=1, max_new_tokens=1, eval_batch=1,
                                       kl_horizon=1, kl_coef=0, gamma=0, lam=0), at_most=dict(gamma=1, lam=1),
                   above=dict(temperature=0, value_lr=0, cliprange=0, cliprange_value=0))
    tu.default_init_from(args, "sft", "train_sft.py")
    if args.reward == "model":
        args.reward_model = args.reward_model or os.path.join("checkpoints", f"reward_{args.config}")
        if not os.path.isfile(os.path.join(args.reward_model, "config.json")):
            raise FileNotFoundError(f"{args.reward_model}: no reward model; run `python train_reward.py --config "
                                    f"{args.config}` first, pass --reward-model DIR, or use --reward builtin")
    args.critic_from = args.critic_from or (args.reward_model if args.reward == "model" else args.init_from)
    return args


# ----------------------------------------------------------------------------- the PPO math
def masked_whiten(x, mask, eps=1e-8):
    """(x - mean) / std over the masked entries; zero elsewhere."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def gae(rewards, values, mask, gamma, lam):
    """Generalised advantage estimation (Schulman et al. 2016), (B, T) each; mask marks the response tokens,
    which are contiguous in each row. delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1};
    past the last response token V and A are 0. Returns (advantages, returns = advantages + values).
    Example: rewards [[0, 0, 1]], values 0, gamma = lam = 1 -> advantages [[1, 1, 1]] (the final reward reaches back)"""
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros(B, device=rewards.device)
    for t in reversed(range(T)):
        next_mask = mask[:, t + 1] if t + 1 < T else torch.zeros(B, device=rewards.device)
        next_value = values[:, t + 1] * next_mask if t + 1 < T else torch.zeros(B, device=rewards.device)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage * next_mask) * mask[:, t]
        advantages[:, t] = next_advantage
    return advantages, (advantages + values) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange):
    """Clipped surrogate (Schulman et al. 2017, eq. 7): mean of max(-A r, -A clip(r, 1-eps, 1+eps)), r = pi/pi_old.
    Returns (loss, clip fraction, approximate KL = mean of (log r)^2 / 2)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    losses = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange))
    clipfrac = masked_mean(((ratio - 1).abs() > cliprange).float(), mask)
    return masked_mean(losses, mask), clipfrac, masked_mean(0.5 * log_ratio ** 2, mask)


def value_loss(values, old_values, returns, mask, cliprange_value):
    """Clipped value loss (as in OpenAI's PPO2): 0.5 * mean of max((V - R)^2, (V_clipped - R)^2), where
    V_clipped stays within cliprange_value of the rollout's values. Returns (loss, the fraction where the clipped
    term was the larger: TRL's val/clipfrac_avg)."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss, clipped_loss = (values - returns) ** 2, (clipped - returns) ** 2
    clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask), clipfrac


def adaptive_kl_coef(kl_coef, kl, target, samples, horizon):
    """Adaptive KL control (Ziegler et al. 2019, as TRL's AdaptiveKLController): the coefficient grows when the KL
    is over the target and shrinks when under, by the relative error clipped to +-20%, scaled by samples / horizon.
    Example: kl_coef 0.2, kl 6, target 3, 64 samples, horizon 640 -> 0.2 * (1 + 0.2 * 0.1) = 0.204"""
    error = max(-0.2, min(0.2, kl / target - 1))
    return kl_coef * (1 + error * samples / horizon)


def main(argv=None):
    args = parse_args(argv)

    # ------------------------------------------------------------------------- 2. setup
    run = tu.setup(args)
    tu.prepare_run_dir(args, run)  # refuses a folder that holds a run, unless --resume or --overwrite

    # ------------------------------------------------------------------------- 3. data and tokenizer
    tokenizer = tu.copy_tokenizer(args, run)
    for role, run_dir in (("reward model", args.reward_model if args.reward == "model" else None), ("critic", args.critic_from)):
        other = BPETokenizer.load(os.path.join(run_dir, "tokenizer.json")) if run_dir else tokenizer
        if (other.vocab_bytes, other.special_tokens) != (tokenizer.vocab_bytes, tokenizer.special_tokens):
            raise ValueError(f"{run_dir}: the {role} was trained with another tokenizer than {args.init_from}, so it "
                             f"cannot read the policy's token ids; train it from the same pretraining run")
    train_prompts, val_prompts, stats = load_data(args, "prompt")
    if args.data == ["builtin"] and not args.val_data:
        val_prompts = prompt_records(builtin_data.checkable_prompts(split="heldout"))
    val_prompts = (val_prompts or train_prompts)[:args.eval_batch]
    if args.reward == "builtin" and any(p["answer"] is None for p in train_prompts):
        raise ValueError("--reward builtin needs prompts with an 'answer' field (the built-in data has them)")
    # prompts longer than half the context are cut from the left (the latest turn is kept)
    encode = lambda record: tokenizer.apply_chat_template(record["prompt"], add_generation_prompt=True)[0][-(args.seq_len // 2):]  # noqa: E731
    train_ids, val_ids = [encode(r) for r in train_prompts], [encode(r) for r in val_prompts]
    sampler = EpochSampler(len(train_prompts), args.seed)
    if run.master:
        tu.write_json(os.path.join(args.out_dir, "dataset_stats.json"),
                      {**stats, "train_prompts": len(train_ids), "val_prompts": len(val_ids)})
        print(f"data: {len(train_ids)} train prompts, {len(val_ids)} held-out prompts; reward: {args.reward}")

    # ------------------------------------------------------------------------- 4. models and optimizer
    # eval mode for the trained models too: no dropout in PPO (as in TRL), so pi/pi_old is exactly 1 before the
    # first minibatch step and the clipping measures only what the updates changed
    policy = load_model(args.init_from, run.device)                              # the actor, trained
    reference = load_model(args.init_from, run.device).requires_grad_(False)     # frozen SFT model
    critic = load_value_model(args.critic_from, run.device)                      # values, trained
    reward_model = (load_value_model(args.reward_model, run.device, trained_head=True).requires_grad_(False)  # frozen
                    if args.reward == "model" else None)
    # one AdamW, two learning rates: the critic's group is scaled to --value-lr (the loop multiplies each group's lr by its lr_scale)
    optimizer = torch.optim.AdamW([{"params": [p for p in policy.parameters() if p.requires_grad], "lr_scale": 1.0},
                                   {"params": [p for p in critic.parameters() if p.requires_grad],
                                    "lr_scale": args.value_lr / args.lr}], lr=args.lr, weight_decay=args.weight_decay)
    if run.master:
        print(f"actor/reference {policy.num_params() / 1e6:.2f}M from {policy.checkpoint}; critic from {args.critic_from}"
              + (f"; reward model {args.reward_model}" if reward_model else ""))
        tu.write_run_config(args, policy.config, tokenizer)

    # ------------------------------------------------------------------------- 5. resume
    ckpt = tu.resume_training(args, run, {"model": policy, "critic": critic}, optimizer)  # --resume (else None)
    raw_policy, raw_critic = policy, critic  # the weights; policy and critic below: what the loop calls
    policy, critic = tu.wrap_model(policy, run, args), tu.wrap_model(critic, run, args)
    log = tu.MetricsLog(args.out_dir, enabled=run.master, tensorboard=args.tensorboard,
                        resume_step=ckpt["step"] if ckpt else None)
    generator = TextGenerator(raw_policy, tokenizer, compile=args.compile_sampling, freeze=False)  # the policy trains on

    @torch.no_grad()
    def score(records, ids, lengths, prompt_lengths, responses):
        """(rewards (B,), accuracy or None): the reward model at the last token, or the checker's 1/0."""
        answers = [r["answer"] for r in records]
        correct = [builtin_data.check_answer(tokenizer.decode(resp, skip_special_tokens=True), a)
                   for resp, a in zip(responses, answers)] if all(a is not None for a in answers) else None
        if reward_model is None:
            return torch.tensor(correct, device=run.device), sum(correct) / len(correct)
        with tu.autocast(run):
            values = reward_model(ids, prompt_lengths).values
        rewards = values_at_last_token(values, lengths)
        return rewards, (sum(correct) / len(correct) if correct is not None else None)

    @torch.no_grad()
    def rollout(records, prompt_ids, seed, greedy=False):
        """Sample (or greedily decode) responses and compute everything PPO needs from them, without gradient."""
        cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, greedy=greedy, seed=seed)
        with tu.autocast(run):
            response_ids = generator.generate_ids(prompt_ids, cfg)
        ids, lengths, prompt_lengths, responses = rollout_sequences(prompt_ids, response_ids, tokenizer.eos_id, tokenizer.pad_id)
        ids, lengths, prompt_lengths = ids.to(run.device), lengths.to(run.device), prompt_lengths.to(run.device)
        x, y, mask = response_targets(ids, lengths, prompt_lengths)  # mask: exactly the generated tokens
        with tu.autocast(run):
            old_logprobs = answer_logprobs(raw_policy, x, y, mask)[0]  # (B, T), 0 off the answer tokens
            ref_logprobs = answer_logprobs(reference, x, y, mask)[0]
            old_values = raw_critic(x)[0] * mask
        scores, accuracy = score(records, ids, lengths, prompt_lengths, responses)
        return {"x": x, "y": y, "mask": mask, "old_logprobs": old_logprobs, "ref_logprobs": ref_logprobs,
                "old_values": old_values, "scores": scores, "accuracy": accuracy, "responses": responses}

    if args.inspect:
        return inspect_first_rollout(args, run, tokenizer, train_prompts, train_ids, sampler, rollout)

    # ------------------------------------------------------------------------- 6. the loop
    # The loop's state, declared together. best_metric: the negated held-out reward (lower is better, so the best
    # checkpoint has the highest reward), at best_step. Step 0 (the SFT model) is the baseline, never the best.
    # kl_coef: the KL penalty's coefficient, which --adaptive-kl moves toward --target-kl.
    start_step = step = ckpt["step"] if ckpt else 0
    best_metric, best_step, baseline_metric, evals_without_improvement = tu.best_so_far(ckpt)
    kl_coef = ckpt["kl_coef"] if ckpt else args.kl_coef
    rollout_batch, minibatch_size, grad_accum, world_size = (args.rollout_batch, args.minibatch_size, args.grad_accum,
                                                             run.world_size)
    trained = [p for group in optimizer.param_groups for p in group["params"]]  # what the optimizer updates
    ctrl_c = tu.StopSignal().install()  # from here the first Ctrl+C asks the loop to save and stop
    bad_steps = tu.BadSteps(args)  # non-finite losses: skip the update; stop after --max-bad-steps in a row
    eta = tu.ETA(args, run, step)  # after the first updates: how long the whole run will take on this machine
    started_at, t_last = time.time(), time.time()
    plotted_at = 0.0  # when plots/loss_curve_latest.png was last drawn
    bar = tqdm(total=args.max_steps, initial=step, disable=not run.master, dynamic_ncols=True, unit="step", desc="train")
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

        # --- once in a while: greedy answers to the held-out prompts (each rank its share): mean reward, accuracy,
        # KL to the reference per response; keep the best, save and plot (rank 0)
        evaluate_now = not resumed_here and (step % args.eval_interval == 0 or last_step or out_of_time)
        improved = early_stop = False
        if evaluate_now:
            r = rollout(val_prompts, val_ids, seed=0, greedy=True)
            kl = ((r["old_logprobs"] - r["ref_logprobs"]).sum(-1)).mean().item()
            metrics = {"val_reward": r["scores"].mean().item(), "val_kl": kl,
                       "val_response_length": r["mask"].sum(-1).mean().item()}
            if r["accuracy"] is not None:
                metrics["val_accuracy"] = r["accuracy"]
            metrics = {k: tu.all_reduce_mean(v, run) for k, v in metrics.items()}
            example = tokenizer.decode(r["responses"][0])
            improved, baseline_metric, evals_without_improvement = tu.track_best(
                step, -metrics["val_reward"], best_metric, baseline_metric, evals_without_improvement,
                args.early_stop_delta)
            if improved:
                best_metric, best_step = -metrics["val_reward"], step
            if run.master:
                log.log({"step": step, **metrics, "memory_mb": tu.peak_memory_mb(run)})
                accuracy = f", accuracy {metrics['val_accuracy']:.3f}" if "val_accuracy" in metrics else ""
                print(f"\nstep {step}: held-out reward {metrics['val_reward']:+.3f}{accuracy}, KL {metrics['val_kl']:.3f}"
                      f"{' (best)' if improved else ''}\n  {val_prompts[0]['prompt'][-1]['content']!r} -> {example!r}")
            if step == 0:
                eta.eval_done()
            early_stop = args.early_stop_patience > 0 and evals_without_improvement >= args.early_stop_patience

        # --- save ckpt_latest.pt at each eval, every --save-interval steps and before stopping; ckpt_best.pt when
        # improved. The checkpoint is a plain dict (torch.load(weights_only=True) reads it), written atomically.
        save_now = evaluate_now or stop_now or (step > start_step and args.save_interval and step % args.save_interval == 0)
        if save_now and run.master:
            checkpoint = {
                "model": raw_policy.state_dict(), "lora": None, "critic": raw_critic.state_dict(), "kl_coef": kl_coef,
                "optimizer": optimizer.state_dict(), "step": step,
                "best_val_loss": best_metric, "best_step": best_step, "baseline_val_loss": baseline_metric,
                "evals_without_improvement": evals_without_improvement, "rng": tu.rng_state(),
                "model_config": raw_policy.config.to_dict(), "args": tu.plain_args(args),
                "scaler": run.scaler.state_dict(),  # the fp16 loss scale (empty unless fp16 on CUDA)
            }
            tu.save_run(args, checkpoint, is_best=improved)
            # the plot (~0.5 s) at most every 30 s, and at the last eval: at an eval every 10 steps it took ~8% of a
            # 150 s budget (BENCHMARKS.md, GRPO steps in the same 150 s)
            last_eval = last_step or stop_now or early_stop or out_of_time
            if evaluate_now and not args.no_plot and (last_eval or time.time() - plotted_at > 30):
                plotted_at = time.time()
                tu.plot_metrics([args.out_dir], os.path.join(args.out_dir, "plots", "loss_curve_latest.png"),
                                keys=(("reward", "val_reward"), ("accuracy", "val_accuracy"), ("kl", "val_kl"),
                                      ("entropy", "approx_kl", "clipfrac"), ("value_loss",), ("response_length",)))
        if evaluate_now:
            t_last = time.time()  # rollouts/s measures training, not evaluation
        if early_stop and run.master:
            print(f"early stop: no val improvement > {args.early_stop_delta} in {args.early_stop_patience} evals")
        if stop_now and run.master:
            tu.print_saved_for_resume(args, step)
        if last_step or stop_now or early_stop or out_of_time:
            break

        # --- one PPO step
        lr = tu.get_lr(step, args)  # warmup, then cosine down to --min-lr
        for group in optimizer.param_groups:  # lr_scale: e.g. PPO's critic learns faster
            group["lr"] = lr * group.get("lr_scale", 1.0)
        # 1-2. rollout: every (step, rank) takes its own slice of one deterministic prompt stream
        indices = sampler.take((step * world_size + run.rank) * rollout_batch, rollout_batch)
        batch = rollout([train_prompts[i] for i in indices], [train_ids[i] for i in indices], seed=args.seed * 100003 + step)
        mask = batch["mask"]  # (N, T): 1 on the generated tokens
        # 3. per-token rewards: the KL penalty everywhere, the score on the last response token
        kl = batch["old_logprobs"] - batch["ref_logprobs"]                     # (N, T), 0 off the response
        rewards = -kl_coef * kl
        last = mask.sum(-1).long() + (mask.argmax(-1)) - 1                     # index of each row's last response token
        rewards[torch.arange(rollout_batch), last] += batch["scores"]
        # 4. advantages and returns
        advantages, returns = gae(rewards, batch["old_values"], mask, args.gamma, args.lam)
        advantages = masked_whiten(advantages, mask)
        # 5. PPO epochs over minibatches; a CUDA out-of-memory error halves the micro-batch and runs them again
        while True:
            sums, updates, early_stopped = {}, 0, False
            try:
                for epoch in range(args.ppo_epochs):
                    order = torch.randperm(rollout_batch, generator=torch.Generator().manual_seed(args.seed + step * 31 + epoch))
                    for start in range(0, rollout_batch, minibatch_size):
                        rows = order[start:start + minibatch_size]
                        for micro in range(grad_accum):  # --grad-accum splits a minibatch into grad_accum micro-batches
                            sub = rows[micro::grad_accum]
                            with tu.autocast(run):  # logits: the answer tokens' only, (n, V)
                                logprobs, logits = answer_logprobs(policy, batch["x"][sub], batch["y"][sub], mask[sub])
                                values = critic(batch["x"][sub])[0]
                            pg_loss, clipfrac, approx_kl = policy_loss(logprobs, batch["old_logprobs"][sub],
                                                                       advantages[sub], mask[sub], args.cliprange)
                            vf_loss, vf_clipfrac = value_loss(values, batch["old_values"][sub], returns[sub], mask[sub],
                                                              args.cliprange_value)
                            loss = pg_loss + args.vf_coef * vf_loss
                            run.scaler.scale(loss / grad_accum).backward()
                            with torch.no_grad():
                                entropy = entropy_from_logits(logits).mean()  # over the answer tokens
                            for k, v in (("pg_loss", pg_loss), ("value_loss", vf_loss), ("clipfrac", clipfrac),
                                         ("approx_kl", approx_kl), ("entropy", entropy), ("loss", loss),
                                         ("value_clipfrac", vf_clipfrac)):
                                sums[k] = sums.get(k, 0.0) + v.item() / grad_accum
                        if bad_steps.skip(tu.all_reduce_mean(loss.item(), run), step, optimizer, log):
                            continue
                        run.scaler.unscale_(optimizer)  # fp16: clip the true gradients, not the loss-scaled ones
                        grad_norm = float(torch.nn.utils.clip_grad_norm_(trained, args.grad_clip or float("inf")))  # norm before
                        run.scaler.step(optimizer)  # AdamW (a plain optimizer.step() unless fp16 on CUDA)
                        run.scaler.update()
                        optimizer.zero_grad(set_to_none=True)
                        updates += 1
                        if tu.all_reduce_mean(approx_kl.item(), run) > args.max_approx_kl:
                            early_stopped = True  # the policy moved too far from the rollout's: stop reusing it
                            break
                    if early_stopped:
                        break
                break
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                minibatch_size, grad_accum = tu.halve_micro_batch(minibatch_size, grad_accum, run, log, step)
                minibatch_size *= 2  # keep the minibatch; only the micro-batch (minibatch_size / grad_accum) halves
        # adaptive KL (Ziegler et al. 2019): move kl_coef by up to 20% per horizon toward the target KL
        mean_kl = tu.all_reduce_mean(kl.sum(-1).mean().item(), run)
        kl_coef_used = kl_coef  # the coefficient this step's rewards were computed with
        if args.adaptive_kl:
            kl_coef = adaptive_kl_coef(kl_coef, mean_kl, args.target_kl, rollout_batch * world_size, args.kl_horizon)
        step += 1
        bar.update(1)
        eta.step_done(step)
        if step % args.log_interval == 0 or step == args.max_steps:
            row = {"step": step, "reward": tu.all_reduce_mean(batch["scores"].mean().item(), run), "kl": mean_kl,
                   **{k: tu.all_reduce_mean(v / max(1, updates), run) for k, v in sums.items()},
                   "response_length": tu.all_reduce_mean(mask.sum(-1).mean().item(), run), "kl_coef": kl_coef,
                   "ppo_updates": updates, "early_stopped": early_stopped, "lr": lr,
                   "grad_norm": grad_norm if updates else 0.0,
                   "rollouts_per_sec": rollout_batch * world_size / (time.time() - t_last),
                   "memory_mb": tu.peak_memory_mb(run)}
            if batch["accuracy"] is not None:
                row["accuracy"] = tu.all_reduce_mean(batch["accuracy"], run)
            # the same figures under TRL's PPOTrainer names (its val/ is the value function, not validation)
            row.update({"objective/kl": mean_kl, "objective/scores": row["reward"],
                        "objective/non_score_reward": -kl_coef_used * mean_kl,
                        "objective/rlhf_reward": row["reward"] - kl_coef_used * mean_kl,
                        "objective/entropy": tu.all_reduce_mean(-batch["old_logprobs"].sum(-1).mean().item(), run),
                        "policy/entropy_avg": row.get("entropy", 0.0), "policy/approxkl_avg": row.get("approx_kl", 0.0),
                        "policy/clipfrac_avg": row.get("clipfrac", 0.0), "loss/policy_avg": row.get("pg_loss", 0.0),
                        "loss/value_avg": row.get("value_loss", 0.0), "val/clipfrac_avg": row.get("value_clipfrac", 0.0),
                        "eps": row["rollouts_per_sec"], "episode": step * rollout_batch * world_size})
            t_last = time.time()
            bar.set_postfix(reward=f"{row['reward']:+.3f}", kl=f"{mean_kl:.3f}")
            log.log(row)
    bar.close()
    ctrl_c.restore()

    # ------------------------------------------------------------------------- 7. final save and plot
    if run.master:
        if not stop_now:  # ended by its own rule (steps, early stop, time budget), not Ctrl+C or the memory guard:
            tu.write_json(os.path.join(args.out_dir, tu.DONE_FILE), {"step": step})  # `make` reuses a finished run
        evals = {r["step"]: r for r in tu.read_metrics(log.path) if "val_reward" in r}
        first, best = evals[min(evals)], evals.get(best_step, evals[max(evals)])
        accuracy = f", accuracy {first['val_accuracy']:.3f} -> {best['val_accuracy']:.3f}" if "val_accuracy" in best else ""
        print(f"done: step {step}; held-out reward {first['val_reward']:+.3f} -> {best['val_reward']:+.3f}{accuracy} "
              f"(KL {best['val_kl']:.3f}); {tu.best_summary(best_step, best_metric, baseline_metric, 'held-out reward', -1)}; "
              f"run directory {args.out_dir}")
    return best_metric


def inspect_first_rollout(args, run, tokenizer, train_prompts, train_ids, sampler, rollout):
    """--inspect: one rollout's first sequence token by token with its response mask and per-token numbers."""
    indices = sampler.take(0, min(4, args.rollout_batch))
    batch = rollout([train_prompts[i] for i in indices], [train_ids[i] for i in indices], seed=args.seed)
    x, y, mask = batch["x"], batch["y"], batch["mask"]
    print(f"rollout: {tuple(x.shape)}, {int(mask.sum())} generated tokens carry loss; score of row 0: {batch['scores'][0]:+.3f}")
    print(f"{'pos':>4} {'target':<18} {'mask':>4} {'logp':>8} {'ref':>8} {'value':>8}")
    for t in range(x.shape[1]):
        if mask[0, t] or t + 1 < x.shape[1] and mask[0, t + 1]:
            print(f"{t:>4} {tokenizer.id_to_token(int(y[0, t]))!r:<18} {int(mask[0, t]):>4} {batch['old_logprobs'][0, t]:>8.3f} "
                  f"{batch['ref_logprobs'][0, t]:>8.3f} {batch['old_values'][0, t]:>8.3f}")
    print("rollout only; exiting (--inspect)")


if __name__ == "__main__":
    tu.cli(main)
