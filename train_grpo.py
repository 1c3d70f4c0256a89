"""
GRPO (group relative policy optimisation; Shao et al. 2024, the RL of DeepSeek-R1): sample a group of answers to each
prompt, score each with a program that checks it (or a reward model), and raise the answers that beat their group's
mean. The group is the baseline, so there is no critic to train, unlike PPO.

    python train_grpo.py                              # from checkpoints/sft_tiny, built-in questions, checked answers
    python train_grpo.py --data arithmetic            # 2-3 digit sums in English and Chinese, made on the fly
    python train_grpo.py --data arithmetic-1          # one-digit sums: the tiny model gets some right, so it learns
    python train_grpo.py --loss-type dr_grpo --beta 0.04 --num-iterations 2
    python train_grpo.py --rewards correct format model --reward-weights 1 0.25 0.5 --reward-model checkpoints/reward_tiny
    python train_grpo.py --init-from checkpoints/sft_tool --data arithmetic-tool --tools calculator   # agentic RL

One step:
  1. sample --num-generations answers to each of --prompts-per-step prompts (KV cache) and score each one: r
     (--tools: a tool call the model writes runs inside the rollout, and the tool's reply is fed back, not trained on)
  2. advantages A = r - mean(r of its group), divided by the group's std (--scale-rewards group) or not (none)
  3. --num-iterations optimizer steps on this batch: per token, ratio = pi / pi_old and
     loss = -min(ratio A, clip(ratio, 1 - eps, 1 + eps_high) A) (+ beta KL to the reference), averaged as --loss-type
     says (TRL's names: grpo per answer, dr_grpo per answer x max length, dapo per token; cispo's loss is
     -min(ratio, eps_high).detach() A log pi, per token)

Sections: 1 flags, 2 setup, 3 data and tokenizer, 4 models and optimizer, 5 resume, 6 the loop, 7 final save.
"""
import os
import time

import torch
from tqdm import tqdm

import builtin_data
import train_utils as tu
from data import EpochSampler, heldout_prompts, load_data, response_targets, rollout_sequences
from generate import GenerationConfig, TextGenerator
from model import answer_logprobs, entropy_from_logits, load_model, load_value_model, values_at_last_token
from tokenizer import BPETokenizer
from tools import AVAILABLE, final_answer

# --rewards and each one's weight unless --reward-weights says otherwise
REWARD_WEIGHTS = {"correct": 1.0, "format": 0.25, "model": 1.0, "digits": 1.0, "restate": 0.25, "columns": 0.5}


# ----------------------------------------------------------------------------- 1. flags
def parse_args(argv=None):
    # lr: TRL's default 1e-6 is for billion-parameter models; a 1M-parameter policy needs far more to move in 100 steps.
    # 1000 steps: on the built-in questions held-out accuracy still rose at 600 (0.78 at 300, 0.86 at 600)
    p = tu.common_parser("GRPO with rewards from programs (or a reward model).", "grpo",
                         lr=1e-4, max_steps=1000, warmup_steps=5, eval_interval=50, weight_decay=0.0, seq_len=256,
                         log_interval=1)
    p.add_argument("--num-generations", type=int, default=8, help="answers sampled per prompt (the group, G)")
    p.add_argument("--prompts-per-step", type=int, default=8, help="prompts per step: a step scores prompts x G answers")
    p.add_argument("--micro-batch", type=int, default=32, help="answers per forward/backward (memory, not the math)")
    p.add_argument("--num-iterations", type=int, default=1, help="optimizer steps on each batch of answers (mu)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="longest answer sampled")
    p.add_argument("--compile-sampling", action="store_true",
                   help="torch.compile the rollouts' decode step: ~1.7x the sampling speed on CPU after ~10 s of compiling "
                        "per batch size (bench/bench_decode.py); without a working compiler, one warning and eager")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--loss-type", default="grpo", choices=["grpo", "dr_grpo", "dapo", "cispo"])
    p.add_argument("--epsilon", type=float, default=0.2, help="clip the ratio below at 1 - epsilon")
    p.add_argument("--epsilon-high", type=float, default=None, help="clip above at 1 + epsilon_high (default: epsilon; "
                   "DAPO uses 0.28); cispo: the largest ratio kept (default 5)")
    p.add_argument("--beta", type=float, default=0.0, help="KL to the reference (0, TRL's default, loads no reference)")
    p.add_argument("--scale-rewards", default=None, choices=["group", "none"],
                   help="divide advantages by the group's std (default: group; none for dr_grpo, as Dr. GRPO argues)")
    p.add_argument("--rewards", nargs="+", default=["correct", "format"], choices=list(REWARD_WEIGHTS),
                   help="correct: 1 if the answer is right (builtin_data.check_answer_strictly); format: 1 for one "
                        "finished sentence; model: a reward model's score; digits: the share of the answer's digits "
                        "right, in place (builtin_data.digit_credit), partial credit where whole answers are rare; "
                        "restate: the share of the operands the reasoning's first line copies "
                        "(builtin_data.restate_credit); "
                        "columns: the share of column lines that work the right digits (builtin_data.column_credit)")
    p.add_argument("--reward-weights", type=float, nargs="+", default=None,
                   help="one per --rewards (default: " + ", ".join(f"{k} {v:g}" for k, v in REWARD_WEIGHTS.items()) + ")")
    p.add_argument("--reward-model", default=None, help="reward model run directory, for --rewards model")
    p.add_argument("--eval-batch", type=int, default=128, help="held-out prompts answered greedily at each eval")
    p.add_argument("--tools", nargs="+", default=[], choices=sorted(AVAILABLE),
                   help="agentic rollouts: these tools are offered in the system turn, and each call the model writes "
                        "runs inside the rollout; the tool's reply is fed back, not trained on, not counted as length")
    p.add_argument("--max-tool-calls", type=int, default=2, help="tool calls per rollout, at most")
    args = tu.finish_args(p.parse_args(argv), "grpo")
    tu.check_flags(args, at_least=dict(num_generations=2, prompts_per_step=1, micro_batch=1, num_iterations=1,
                                       max_new_tokens=1, eval_batch=1, beta=0, max_tool_calls=0),
                   above=dict(temperature=0, epsilon=0, epsilon_high=0))
    args.reward_weights = args.reward_weights or [REWARD_WEIGHTS[r] for r in args.rewards]
    if len(args.reward_weights) != len(args.rewards):
        raise ValueError(f"--reward-weights: {len(args.reward_weights)} weights for {len(args.rewards)} --rewards")
    if "model" in args.rewards and not args.reward_model:
        raise ValueError("--rewards model needs --reward-model DIR (a run of train_reward.py)")
    if args.epsilon_high is None:
        args.epsilon_high = 5.0 if args.loss_type == "cispo" else args.epsilon
    args.scale_rewards = args.scale_rewards or ("none" if args.loss_type == "dr_grpo" else "group")
    tu.default_init_from(args, "sft", "train_sft.py")
    return args


# ----------------------------------------------------------------------------- the GRPO math
def group_advantages(rewards, group_size, scale=True):
    """rewards (P*G,), G consecutive answers per prompt -> (advantages (P*G,), each group's std (P,)). An answer's
    advantage is how much it beat its group's mean: the group is the baseline a critic would otherwise learn.
    Example: rewards [1, 0, 0, 0], group_size 2, scale=False -> advantages [0.5, -0.5, 0, 0], stds [0.707, 0]"""
    grouped = rewards.view(-1, group_size)
    std = grouped.std(dim=1, keepdim=True)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (std + 1e-4)
    return advantages.view(-1), std.view(-1)


def k3_kl(logprobs, ref_logprobs):
    """Per token, the k3 estimator of KL(pi || pi_ref): exp(d) - d - 1 with d = log pi_ref - log pi, >= 0
    (Schulman 2020), as TRL."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


def grpo_loss(logprobs, old_logprobs, advantages, mask, args, normalizer, ref_logprobs=None):
    """This micro-batch's share of the batch loss, and clip statistics. logprobs etc. (b, T), advantages (b,), mask
    (b, T) on answer tokens. Sums over micro-batches add up to the loss over the batch because `normalizer` is the
    whole batch's: its answers (grpo), answers x max_new_tokens (dr_grpo) or answer tokens (dapo, cispo)."""
    ratio = torch.exp(logprobs - old_logprobs)  # exactly 1 on the first iteration: old is the same policy, detached
    A = advantages[:, None]
    if args.loss_type == "cispo":  # CISPO (MiniMax-M1): clip the importance weight itself, keep every token's gradient
        per_token = -torch.clamp(ratio, max=args.epsilon_high).detach() * A * logprobs
    else:  # PPO's clipped surrogate, per token
        per_token = -torch.min(ratio * A, torch.clamp(ratio, 1 - args.epsilon, 1 + args.epsilon_high) * A)
    if ref_logprobs is not None:
        per_token = per_token + args.beta * k3_kl(logprobs, ref_logprobs)
    if args.loss_type == "grpo":  # mean over each answer's tokens, then over answers
        total = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum()
    else:
        total = (per_token * mask).sum()
    clipped = ((ratio < 1 - args.epsilon) & (A < 0)) | ((ratio > 1 + args.epsilon_high) & (A > 0))
    return total / normalizer, (clipped.float() * mask).sum()


def micro_batches(mask, size):
    """Row indices of each micro-batch of at most `size` answers, answers of similar lengths together (by where their
    last answer token sits): a micro-batch is padded to its longest row, and the think chain's answers run from 16 to
    160 tokens (sorted: 11-18% more steps in 150 s on the think chain)."""
    return (mask.cumsum(1).argmax(1)).argsort().split(size) if len(mask) else ()  # no rows: no micro-batch


def answers_to_run(advantages, every):
    """Which answers the training forward and backward run. An answer whose advantage is 0 (its whole group scored
    the same) adds nothing to the loss or its gradient unless a KL term does (every=True), so only the others run:
    the same update, and the think chain skips ~45% of its answers, the tool chain ~70%. Under DDP every answer runs
    (every=True), since each rank's backward passes must match the other ranks'."""
    return torch.arange(len(advantages)) if every else advantages.nonzero().view(-1)


def format_reward(text, finished):
    """1 for one complete sentence: the answer ended (<|im_end|>) and has exactly one '.' / '。', at its end."""
    text = text.strip()
    return float(finished and text.endswith((".", "。")) and text.count(".") + text.count("。") == 1)


def main(argv=None):
    args = parse_args(argv)

    # ------------------------------------------------------------------------- 2. setup
    run = tu.setup(args)
    tu.prepare_run_dir(args, run)  # refuses a folder that holds a run, unless --resume or --overwrite

    # ------------------------------------------------------------------------- 3. data and tokenizer
    tokenizer = tu.copy_tokenizer(args, run)
    if args.reward_model:
        other = BPETokenizer.load(os.path.join(args.reward_model, "tokenizer.json"))
        if (other.vocab_bytes, other.special_tokens) != (tokenizer.vocab_bytes, tokenizer.special_tokens):
            raise ValueError(f"{args.reward_model}: the reward model was trained with another tokenizer than "
                             f"{args.init_from}; train it from the same pretraining run")
    train_prompts, val_prompts, stats = load_data(args, "prompt")
    held_out = None if args.val_data else heldout_prompts(args.data)  # built-in data: questions never trained on
    val_prompts = held_out or val_prompts
    val_prompts = (val_prompts or train_prompts)[:args.eval_batch]
    if {"correct", "digits", "columns"} & set(args.rewards) and any(p["answer"] is None for p in train_prompts):
        raise ValueError("--rewards correct/digits/columns needs prompts with an 'answer' field (the built-in and arithmetic "
                         "data have them; files in the 'prompt' format may)")
    offered = [AVAILABLE[name] for name in args.tools] or None  # --tools: offered to every prompt that offers none
    # prompts that leave no room for --max-new-tokens in --seq-len are cut from the left (the latest turn is kept)
    keep = max(args.seq_len // 2, args.seq_len - args.max_new_tokens)
    encode = lambda record: tokenizer.apply_chat_template(record["prompt"], add_generation_prompt=True, tools=offered)[0][-keep:]  # noqa: E731
    train_ids, val_ids = [encode(r) for r in train_prompts], [encode(r) for r in val_prompts]
    sampler = EpochSampler(len(train_prompts), args.seed)
    if run.master:
        tu.write_json(os.path.join(args.out_dir, "dataset_stats.json"),
                      {**stats, "train_prompts": len(train_ids), "val_prompts": len(val_ids)})
        print(f"data: {len(train_ids)} train prompts, {len(val_ids)} held-out prompts; rewards: "
              f"{', '.join(f'{w:g} x {r}' for r, w in zip(args.rewards, args.reward_weights))}")

    # ------------------------------------------------------------------------- 4. models and optimizer
    # eval mode throughout (no dropout, as TRL): the first iteration's ratio is then exactly 1
    policy = load_model(args.init_from, run.device)
    reference = load_model(args.init_from, run.device).requires_grad_(False) if args.beta else None  # beta 0: none
    reward_model = (load_value_model(args.reward_model, run.device, trained_head=True).requires_grad_(False)
                    if "model" in args.rewards else None)
    optimizer = policy.configure_optimizer(args.lr, args.weight_decay, device_type=run.device_type)
    if run.master:
        print(f"policy: {policy.num_params() / 1e6:.2f}M parameters from {policy.checkpoint}; {args.loss_type} loss, "
              f"{args.num_generations} answers per prompt, beta {args.beta:g}")
        tu.write_run_config(args, policy.config, tokenizer)

    # ------------------------------------------------------------------------- 5. resume
    ckpt = tu.resume_training(args, run, {"model": policy}, optimizer)  # --resume: weights, optimizer, RNG (else None)
    raw_policy, policy = policy, tu.wrap_model(policy, run, args)  # raw_policy: the weights; policy: what the loop calls
    log = tu.MetricsLog(args.out_dir, enabled=run.master, tensorboard=args.tensorboard,
                        resume_step=ckpt["step"] if ckpt else None)
    generator = TextGenerator(raw_policy, tokenizer, compile=args.compile_sampling, freeze=False)  # the policy trains on

    @torch.no_grad()
    def score(records, ids, lengths, prompt_lengths, responses):
        """(rewards (N,) weighted over --rewards, {reward name: (N,)}, held-out style accuracy (N,) by check_answer)."""
        decoded = [tokenizer.decode(r) for r in responses]
        texts = [final_answer(t) for t in decoded]  # the answer after any reasoning or tool turns
        finished = [tokenizer.eos_id in r for r in responses]
        per_reward = {}
        for name in args.rewards:
            if name == "correct":
                values = [builtin_data.check_answer_strictly(t, r["answer"]) for t, r in zip(texts, records)]
            elif name == "digits":
                values = [builtin_data.digit_credit(t, r["answer"]) for t, r in zip(texts, records)]
            elif name == "format":
                values = [format_reward(t, f) for t, f in zip(texts, finished)]
            elif name == "columns":
                values = [builtin_data.column_credit(t, p["prompt"][-1]["content"], p["answer"])
                          for t, p in zip(decoded, records)]
            elif name == "restate":
                values = [builtin_data.restate_credit(t, p["prompt"][-1]["content"]) for t, p in zip(decoded, records)]
            else:
                with tu.autocast(run):
                    values = values_at_last_token(reward_model(ids, prompt_lengths)[0], lengths).tolist()
            per_reward[name] = torch.tensor(values, dtype=torch.float32, device=run.device)
        rewards = sum(w * per_reward[name] for name, w in zip(args.rewards, args.reward_weights))
        accuracy = torch.tensor([builtin_data.check_answer(t, r["answer"]) if r["answer"] is not None else float("nan")
                                 for t, r in zip(texts, records)])
        return rewards, per_reward, accuracy

    @torch.no_grad()
    def sample(records, prompt_ids, seed, greedy=False):
        """Answers to prompt_ids with everything the loss needs, computed without gradient."""
        cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, greedy=greedy, seed=seed)
        by_model, calls = None, [[] for _ in prompt_ids]
        with tu.autocast(run):
            if args.tools:  # tool calls run inside the rollout; by_model marks the model's own tokens
                response_ids, by_model, calls = generator.generate_with_tools(prompt_ids, cfg, args.max_tool_calls)
            else:
                response_ids = generator.generate_ids(prompt_ids, cfg)
        ids, lengths, prompt_lengths, responses = rollout_sequences(prompt_ids, response_ids, tokenizer.eos_id,
                                                                    tokenizer.pad_id, cut=by_model is None)
        ids, lengths, prompt_lengths = ids.to(run.device), lengths.to(run.device), prompt_lengths.to(run.device)
        x, y, mask = response_targets(ids, lengths, prompt_lengths, by_model)  # mask: exactly the model's tokens
        rewards, per_reward, accuracy = score(records, ids, lengths, prompt_lengths, responses)
        opened, closed = tokenizer.special_tokens.get("<think>"), tokenizer.special_tokens.get("</think>")
        reasoning = [r.index(closed) - r.index(opened) - 1 if opened in r and closed in r else 0  # tokens inside <think>
                     for r in responses]
        n_calls = [len(c) for c in calls]
        return {"x": x, "y": y, "mask": mask, "rewards": rewards, "per_reward": per_reward, "accuracy": accuracy,
                "responses": responses, "reasoning_length": sum(reasoning) / len(reasoning),
                "tool_calls": sum(n_calls) / len(n_calls),
                "tool_failures": sum(not ok for c in calls for _, _, ok in c) / max(1, sum(n_calls))}

    if args.inspect:
        return inspect_first_group(args, tokenizer, train_prompts, train_ids, sampler, sample)

    # ------------------------------------------------------------------------- 6. the loop
    # The loop's state, declared together. best_metric: the negated held-out reward (lower is better, so the best
    # checkpoint has the highest reward), at best_step. Step 0 (the SFT model) is the baseline, never the best.
    start_step = step = ckpt["step"] if ckpt else 0
    best_metric, best_step, baseline_metric, evals_without_improvement = tu.best_so_far(ckpt)
    prompts_per_step, group_size, world_size = args.prompts_per_step, args.num_generations, run.world_size
    trained = [p for group in optimizer.param_groups for p in group["params"]]  # what the optimizer updates
    ctrl_c = tu.StopSignal().install()  # from here the first Ctrl+C asks the loop to save and stop
    bad_steps = tu.BadSteps(args)  # non-finite losses: skip the update; stop after --max-bad-steps in a row
    eta = tu.ETA(args, run, step)  # after the first steps: how long the whole run will take on this machine
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

        # --- once in a while: greedy answers to the held-out prompts (each rank its share): reward, accuracy
        # (check_answer, as SFT/DPO/PPO report it) and the strict accuracy the reward uses; keep the best, save (rank 0)
        evaluate_now = not resumed_here and (step % args.eval_interval == 0 or last_step or out_of_time)
        improved = early_stop = False
        if evaluate_now:
            r = sample(val_prompts, val_ids, seed=0, greedy=True)
            metrics = {"val_reward": r["rewards"].mean().item(), "val_response_length": r["mask"].sum(-1).mean().item(),
                       "val_reasoning_length": r["reasoning_length"]}
            if args.tools:
                metrics["val_tool_calls"] = r["tool_calls"]
            if not torch.isnan(r["accuracy"]).any():
                metrics["val_accuracy"] = r["accuracy"].mean().item()
            if "correct" in r["per_reward"]:
                metrics["val_strict_accuracy"] = r["per_reward"]["correct"].mean().item()
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
                print(f"\nstep {step}: held-out reward {metrics['val_reward']:.3f}{accuracy}{' (best)' if improved else ''}"
                      f"\n  {val_prompts[0]['prompt'][-1]['content']!r} -> {example!r}")
            if step == 0:
                eta.eval_done()
            early_stop = args.early_stop_patience > 0 and evals_without_improvement >= args.early_stop_patience

        # --- save ckpt_latest.pt at each eval, every --save-interval steps and before stopping; ckpt_best.pt when
        # improved. The checkpoint is a plain dict (torch.load(weights_only=True) reads it), written atomically.
        save_now = evaluate_now or stop_now or (step > start_step and args.save_interval and step % args.save_interval == 0)
        if save_now and run.master:
            checkpoint = {
                "model": raw_policy.state_dict(), "lora": None, "optimizer": optimizer.state_dict(), "step": step,
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
                                keys=(("reward", "val_reward"), ("accuracy", "val_accuracy", "val_strict_accuracy"),
                                      ("reward_std", "frac_reward_zero_std"),
                                      ("completions/mean_length", "val_reasoning_length", "val_response_length"),
                                      ("entropy", "clip_ratio", "kl"), ("lr",)))
        if evaluate_now:
            t_last = time.time()  # completions/s measures training, not evaluation
        if early_stop and run.master:
            print(f"early stop: no val improvement > {args.early_stop_delta} in {args.early_stop_patience} evals")
        if stop_now and run.master:
            tu.print_saved_for_resume(args, step)
        if last_step or stop_now or early_stop or out_of_time:
            break

        # --- one GRPO step
        lr = tu.get_lr(step, args)  # warmup, then cosine down to --min-lr
        for group in optimizer.param_groups:  # lr_scale: e.g. PPO's critic learns faster
            group["lr"] = lr * group.get("lr_scale", 1.0)
        # 1. sample group_size answers to each prompt: every (step, rank) takes its own prompts from one stream
        indices = [i for i in sampler.take((step * world_size + run.rank) * prompts_per_step, prompts_per_step)
                   for _ in range(group_size)]  # each prompt group_size times, consecutive
        batch = sample([train_prompts[i] for i in indices], [train_ids[i] for i in indices], seed=args.seed * 100003 + step)
        mask = batch["mask"]  # (N, T): 1 on the generated tokens
        # 2. group-relative advantages
        advantages, group_std = group_advantages(batch["rewards"], group_size, scale=args.scale_rewards == "group")  # (N,), (P,)
        with torch.no_grad(), tu.autocast(run):  # pi_old is needed only when a batch is used more than once
            old_logprobs = answer_logprobs(raw_policy, batch["x"], batch["y"], mask)[0] if args.num_iterations > 1 else None
            ref_logprobs = answer_logprobs(reference, batch["x"], batch["y"], mask)[0] if reference is not None else None
        N = len(indices)
        normalizer = {"grpo": N, "dr_grpo": N * args.max_new_tokens}.get(args.loss_type, mask.sum().clamp(min=1))
        learning = answers_to_run(advantages, every=reference is not None or world_size > 1)
        # 3. --num-iterations optimizer steps over the batch, in micro-batches (gradients add up to the batch's)
        sums, grad_norm = {}, 0.0
        for iteration in range(args.num_iterations):
            iteration_loss = 0.0
            for rows in micro_batches(mask[learning], args.micro_batch):
                rows = learning[rows]
                with tu.autocast(run):  # log p of each answer token (B, T), 0 elsewhere; logits (answer tokens, V)
                    logprobs, logits = answer_logprobs(policy, batch["x"][rows], batch["y"][rows], mask[rows])
                old = old_logprobs[rows] if old_logprobs is not None else logprobs.detach()
                ref = ref_logprobs[rows] if ref_logprobs is not None else None
                loss, clipped = grpo_loss(logprobs, old, advantages[rows], mask[rows], args, normalizer, ref)
                run.scaler.scale(loss).backward()
                iteration_loss += loss.item()
                with torch.no_grad():
                    part = {"loss": loss.item(), "clipped": clipped.item(),
                            "entropy": entropy_from_logits(logits).sum().item()}  # logits: answer tokens only
                    if ref is not None:
                        part["kl"] = (k3_kl(logprobs, ref) * mask[rows]).sum().item()
                for k, v in part.items():
                    sums[k] = sums.get(k, 0.0) + v / args.num_iterations
            if bad_steps.skip(tu.all_reduce_mean(iteration_loss, run), step, optimizer, log):  # non-finite: no update
                break
            if not len(learning):  # no answer to learn from: AdamW still moves by its moments, as at a zero gradient
                for p in trained:
                    p.grad = torch.zeros_like(p)
            run.scaler.unscale_(optimizer)  # fp16: clip the true gradients, not the loss-scaled ones
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trained, args.grad_clip or float("inf")))  # norm before
            run.scaler.step(optimizer)  # AdamW (a plain optimizer.step() unless fp16 on CUDA)
            run.scaler.update()
            optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        eta.step_done(step)
        if step % args.log_interval == 0 or step == args.max_steps:
            tokens = mask.sum().item()
            row = {"step": step, "loss": tu.all_reduce_mean(sums.get("loss", 0.0), run),
                   "reward": tu.all_reduce_mean(batch["rewards"].mean().item(), run),
                   "reward_std": tu.all_reduce_mean(group_std.mean().item(), run),
                   "frac_reward_zero_std": tu.all_reduce_mean((group_std < 1e-6).float().mean().item(), run),
                   "completions/mean_length": tu.all_reduce_mean(mask.sum(-1).mean().item(), run),
                   "clip_ratio": tu.all_reduce_mean(sums.get("clipped", 0.0) / tokens, run),
                   **{f"rewards/{name}/mean": tu.all_reduce_mean(v.mean().item(), run)
                      for name, v in batch["per_reward"].items()},
                   "lr": lr, "grad_norm": grad_norm, "completions_per_sec": N * world_size / (time.time() - t_last),
                   "memory_mb": tu.peak_memory_mb(run)}
            if "entropy" in sums:  # over the answers run (those with an advantage, or all with a KL term)
                row["entropy"] = tu.all_reduce_mean(sums["entropy"] / max(1, mask[learning].sum().item()), run)
            if "kl" in sums:
                row["kl"] = tu.all_reduce_mean(sums["kl"] / tokens, run)
            if args.tools:  # TRL's names: tool calls per completion, and the share of them that failed
                row["tools/call_frequency"] = tu.all_reduce_mean(batch["tool_calls"], run)
                row["tools/failure_frequency"] = tu.all_reduce_mean(batch["tool_failures"], run)
            if not torch.isnan(batch["accuracy"]).any():
                row["accuracy"] = tu.all_reduce_mean(batch["accuracy"].mean().item(), run)
            t_last = time.time()
            bar.set_postfix(reward=f"{row['reward']:.3f}", std=f"{row['reward_std']:.2f}")
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
        print(f"done: step {step}; held-out reward {first['val_reward']:.3f} -> {best['val_reward']:.3f}{accuracy}; "
              f"{tu.best_summary(best_step, best_metric, baseline_metric, 'held-out reward', sign=-1)}; "
              f"run directory {args.out_dir}")
    return best_metric


def inspect_first_group(args, tokenizer, train_prompts, train_ids, sampler, sample):
    """--inspect: one prompt's group of answers with their rewards and advantages; no update."""
    i = sampler.take(0, 1)[0]
    batch = sample([train_prompts[i]] * args.num_generations, [train_ids[i]] * args.num_generations, seed=args.seed)
    advantages, std = group_advantages(batch["rewards"], args.num_generations, scale=args.scale_rewards == "group")
    print(f"prompt: {train_prompts[i]['prompt'][-1]['content']!r} (answer {train_prompts[i]['answer']!r}); group std {std[0]:.3f}")
    print(f"{'reward':>7} {'advantage':>9}  answer")
    for j, response in enumerate(batch["responses"]):
        print(f"{batch['rewards'][j]:>7.3f} {advantages[j]:>9.3f}  {tokenizer.decode(response)!r}")
    print("one group only; exiting (--inspect)")


if __name__ == "__main__":
    tu.cli(main)
