"""
Decoding speed against what this machine's memory allows, every ratio measured in the same run (issue 38):

1. batch 1, small preset: fp32, bf16 and int8 weights, eager and compiled (TextGenerator(compile=True): model.decode_step
   on a static cache through torch.compile), tokens/s, compiled/eager, greedy tokens against eager fp32's (int8:
   the share that agrees), seconds to the first generation (compiling included), and % of the weight-bandwidth limit:
   memory read GB/s measured now / bytes of weights one token reads.
2. batched decoding, tiny and small, batch 8 and 64, bf16 weights: tokens/s eager and compiled, against batch x limit.
3. RL sampling in GRPO's think-chain shape (64 rows, prompts of 40-70 tokens, 160 tokens sampled at temperature 1,
   an fp32 policy under bf16 autocast, compiled without freezing as train_grpo.py --compile-sampling does):
   torch.multinomial (the sampler before sample_from) and sample_from, eager and compiled, and compiled with the
   draw inside the compiled step (TextGenerator.pick_in_step, the default).

    python bench/bench_decode.py                                # all three, ~5 min on 2 cores
    python bench/bench_decode.py --parts batch1 --rounds 5
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import generate  # noqa: E402
from bench_model import FakeTokenizer, read_bandwidth, weight_bytes  # noqa: E402
from common import cli  # noqa: E402
from generate import GenerationConfig, TextGenerator  # noqa: E402
from model import MiniGPT, get_config, quantize_int8  # noqa: E402


def timed_runs(runners, rounds):
    """{name: median seconds} over `rounds` rounds that alternate the runners (drift hits them alike)."""
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for k, run in runners.items():
            t = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def first_call(run):
    """(output, seconds) of a runner's first call: what a user waits for, compiling included."""
    t = time.perf_counter()
    out = run()
    return out, time.perf_counter() - t


def runner(gen, prompts, cfg, autocast=False):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return gen.generate_ids(prompts, cfg)
    return run


def bandwidths(n=3):
    return [read_bandwidth(torch.device("cpu")) for _ in range(n)]


def batch1(args, out):
    print(f"\n1. batch 1, {args.config} preset, {args.new_tokens} greedy tokens after 16 prompt tokens, median of "
          f"{args.rounds} rounds")
    cfg = get_config(args.config, vocab_size=6400)
    torch.manual_seed(0)
    fp32 = MiniGPT(cfg).eval()
    models = {"fp32": fp32, "bf16": copy.deepcopy(fp32).to(torch.bfloat16),
              "int8": quantize_int8(copy.deepcopy(fp32)).to(torch.bfloat16)}
    prompt = [torch.randint(3, 6400, (16,)).tolist()]
    gcfg = GenerationConfig(max_new_tokens=args.new_tokens, greedy=True, stop_on_eos=False)
    bw_before = bandwidths()
    torch._dynamo.reset()  # compiled graphs of earlier parts would count toward the recompile limit (8)
    runners, tokens, first, gens = {}, {}, {}, {}
    for name, model in models.items():
        for compiled in (False, True):
            key = f"{name} {'compiled' if compiled else 'eager'}"
            gens[key] = TextGenerator(model, FakeTokenizer, compile=compiled)
            runners[key] = runner(gens[key], prompt, gcfg)
            tokens[key], first[key] = first_call(runners[key])
    seconds = timed_runs(runners, args.rounds)
    bw = max(bw_before + bandwidths())  # the best read seen: the limit is not flattered by a slow moment
    print(f"memory read {bw:.1f} GB/s (best of 6 sums over 512 MiB; before: {min(bw_before):.1f}-{max(bw_before):.1f})")
    print(f"{'weights':<8}{'MB/token':>9}{'limit':>7}{'eager':>7}{'%':>5}{'compiled':>10}{'%':>5}{'x eager':>8}"
          f"{'agree':>7}{'first s':>8}")
    for name, model in models.items():
        mb = weight_bytes(model) / 1e6
        limit = bw * 1e3 / mb
        e, c = (args.new_tokens / seconds[f"{name} {m}"] for m in ("eager", "compiled"))
        ref = tokens["fp32 eager"]
        agree = sum(a == b for a, b in zip(tokens[f"{name} compiled"][0], ref[0])) / len(ref[0])
        same_as_eager = tokens[f"{name} compiled"] == tokens[f"{name} eager"]
        print(f"{name:<8}{mb:>9.1f}{limit:>7.0f}{e:>7.0f}{100 * e / limit:>4.0f}%{c:>10.0f}{100 * c / limit:>4.0f}%"
              f"{c / e:>8.2f}{agree:>7.2f}{first[f'{name} compiled']:>8.1f}"
              + ("" if same_as_eager else "  (compiled tokens differ from eager's)")
              + ("" if gens[f"{name} compiled"].step_ran else "  (did not compile: eager)"))
        out[f"batch1/{name}"] = {"mb_per_token": mb, "limit_tok_s": limit, "eager_tok_s": e, "compiled_tok_s": c,
                                 "agree_with_fp32": agree, "compiled_equals_eager": same_as_eager,
                                 "first_call_s": first[f"{name} compiled"], "bandwidth_gb_s": bw}


def batched(args, out):
    print(f"\n2. batched greedy decoding, bf16 weights, {args.new_tokens} tokens after prompts of 16-48 tokens, "
          f"median of {args.rounds} rounds")
    print(f"{'config':<7}{'batch':>6}{'limit':>8}{'eager':>8}{'%':>5}{'compiled':>10}{'%':>5}{'x eager':>8}{'same':>6}{'first s':>8}")
    bw = max(bandwidths())
    for config in args.batched_configs:
        cfg = get_config(config, vocab_size=2048 if config == "tiny" else 6400)
        torch.manual_seed(0)
        model = MiniGPT(cfg).eval().to(torch.bfloat16)
        limit = bw * 1e3 / (weight_bytes(model) / 1e6)
        for batch in (8, 64):
            prompts = [torch.randint(3, cfg.vocab_size, (int(n),)).tolist() for n in torch.randint(16, 48, (batch,))]
            gcfg = GenerationConfig(max_new_tokens=args.new_tokens, greedy=True, stop_on_eos=False)
            torch._dynamo.reset()
            runners = {m: runner(TextGenerator(model, FakeTokenizer, compile=m == "compiled"), prompts, gcfg)
                       for m in ("eager", "compiled")}
            (eager_ids, _), (compiled_ids, first) = first_call(runners["eager"]), first_call(runners["compiled"])
            seconds = timed_runs(runners, args.rounds)
            e, c = (batch * args.new_tokens / seconds[m] for m in ("eager", "compiled"))
            same = sum(a == b for a, b in zip(eager_ids, compiled_ids)) / batch
            print(f"{config:<7}{batch:>6}{batch * limit:>8.0f}{e:>8.0f}{100 * e / batch / limit:>4.0f}%{c:>10.0f}"
                  f"{100 * c / batch / limit:>4.0f}%{c / e:>8.2f}{same:>6.2f}{first:>8.1f}", flush=True)
            out[f"batched/{config}/{batch}"] = {"limit_tok_s": batch * limit, "eager_tok_s": e, "compiled_tok_s": c,
                                                "rows_identical": same, "first_call_s": first}


def rl_sampling(args, out):
    print(f"\n3. RL sampling in GRPO's think-chain shape: tiny preset, 64 rows, {args.rl_new_tokens} tokens at temperature 1, "
          f"fp32 policy under bf16 autocast, median of {args.rounds} rounds")
    cfg = get_config("tiny", vocab_size=2048)
    torch.manual_seed(0)
    model = MiniGPT(cfg).eval()
    prompts = [torch.randint(3, 2000, (int(n),)).tolist() for n in torch.randint(40, 70, (64,))]
    gcfg = GenerationConfig(max_new_tokens=args.rl_new_tokens, temperature=1.0, seed=0, stop_on_eos=False)
    greedy = GenerationConfig(max_new_tokens=args.rl_new_tokens, greedy=True, stop_on_eos=False)
    sample_from = generate.sample_from

    def multinomial(probs, rng=None):  # the sampler before: an exponential drawn per vocabulary entry
        return torch.multinomial(probs, 1, generator=rng).squeeze(1)

    torch._dynamo.reset()
    gens = {"eager": TextGenerator(model, FakeTokenizer), "compiled": TextGenerator(model, FakeTokenizer, compile=True, freeze=False)}
    runners = {}
    for sampler_name, sampler in (("multinomial", multinomial), ("sample_from", sample_from)):
        for mode, gen in gens.items():
            def run(gen=gen, sampler=sampler):
                generate.sample_from, gen.pick_in_step = sampler, False  # the draw in eager ops, after the step
                try:
                    return runner(gen, prompts, gcfg, autocast=True)()
                finally:
                    generate.sample_from, gen.pick_in_step = sample_from, True
            runners[f"{mode} + {sampler_name}"] = run
    runners["compiled, draw in the step"] = runner(gens["compiled"], prompts, gcfg, autocast=True)
    firsts = {k: first_call(run)[1] for k, run in runners.items()}
    same = runner(gens["eager"], prompts, greedy, autocast=True)() == runner(gens["compiled"], prompts, greedy, autocast=True)()
    seconds = timed_runs(runners, args.rounds)
    base = seconds["eager + multinomial"]
    print(f"{'variant':<28}{'seconds':>8}{'completions/s':>15}{'x eager + multinomial':>23}{'first s':>9}")
    for k, s in seconds.items():
        print(f"{k:<28}{s:>8.2f}{64 / s:>15.1f}{base / s:>23.2f}{firsts[k]:>9.1f}")
        out[f"rl_sampling/{k}"] = {"seconds": s, "completions_per_s": 64 / s, "x_eager_multinomial": base / s,
                                   "first_call_s": firsts[k]}
    print(f"greedy rows identical, compiled vs eager: {same}")
    out["rl_sampling/greedy_identical"] = same


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["batch1", "batched", "rl"], choices=["batch1", "batched", "rl"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--config", default="small", help="preset of part 1")
    p.add_argument("--batched-configs", nargs="+", default=["tiny", "small"], help="presets of part 2")
    p.add_argument("--rl-new-tokens", type=int, default=160, help="tokens sampled per answer in part 3")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    out = {}
    for part, fn in (("batch1", batch1), ("batched", batched), ("rl", rl_sampling)):
        if part in args.parts:
            fn(args, out)
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    cli(main)
