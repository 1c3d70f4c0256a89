"""
Training and generation speed of MiniGPT against transformers.LlamaForCausalLM of the identical shape and weights,
measured in the same run. Prints tokens/s, the ratio, and achieved GFLOP/s against this machine's bf16 matmul peak
(fp32's with --dtypes fp32).
Training is compared with HF's default attention (SDPA) and with attn_implementation="eager", which is the faster of
the two for bf16 training on CPU; generation with the default, the faster one for decoding.

    python bench/bench_model.py                      # tiny and small, fp32 and bf16, generation at batch 1 and 8
    python bench/bench_model.py --compile            # also torch.compile'd MiniGPT
    python bench/bench_model.py --device cuda --configs small medium --batch 32 --seq-len 1024
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from export_hf import hf_config, to_hf_state_dict  # noqa: E402
from generate import GenerationConfig, TextGenerator  # noqa: E402
from model import Int8Linear, MiniGPT, get_config, quantize_int8  # noqa: E402
from common import cli, cpu_has_fast_bf16, keep_freed_memory, resolve_device  # noqa: E402


class FakeTokenizer:  # generation needs only these ids
    bos_id, eos_id, pad_id = 1, 2, 0


def sync(device):
    if device.type == "cuda":  # CUDA kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device, dtype=torch.bfloat16, reps=10):
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def flops_per_token(cfg, seq_len):
    """6 x matmul parameters (forward + backward) + attention scores/values: 12 x layers x dim x T (nanoGPT/PaLM)."""
    matmul = cfg.n_layers * (cfg.dim * (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim + cfg.dim * cfg.dim
                             + 3 * cfg.dim * cfg.ffn_hidden * max(1, cfg.experts_per_token if cfg.n_experts else 1)) \
        + cfg.dim * cfg.vocab_size
    return 6 * matmul + 12 * cfg.n_layers * cfg.dim * seq_len


def make_hf(ours, attn="sdpa"):
    """LlamaForCausalLM with our model's shape and weights; attn: transformers' attention implementation."""
    import transformers
    hf_cfg = transformers.AutoConfig.for_model(**hf_config(ours.config, FakeTokenizer))
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg, attn_implementation=attn, dtype=torch.float32)
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    hf.tie_weights()
    return hf


def make_pair(cfg, device):
    torch.manual_seed(0)
    ours = MiniGPT(cfg)
    return ours.to(device), make_hf(ours).to(device)


def train_speed(model, is_hf, batch, seq_len, dtype, steps, vocab, device):
    torch.manual_seed(1)
    x = torch.randint(3, vocab, (batch, seq_len), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    model.train()
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        with ctx:
            loss = model(input_ids=x, labels=x).loss if is_hf else model(x[:, :-1], x[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * seq_len * steps / (time.perf_counter() - t)


@torch.no_grad()
def generation_runner(model, is_hf, batch, new_tokens, vocab, device, compile=False):
    """A function that generates new_tokens greedily for a fixed batch of 16-token prompts and returns the ids."""
    model.eval()
    torch.manual_seed(2)
    prompt = torch.randint(3, vocab, (batch, 16), device=device)
    if is_hf:
        model.generation_config.eos_token_id = None
        return lambda: model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                      pad_token_id=0)[:, 16:]
    if compile:
        torch._dynamo.reset()  # a fresh compile, as in a new process (the batch-1 graphs would use up the recompile limit)
    gen = TextGenerator(model, FakeTokenizer, compile=compile)
    cfg = GenerationConfig(max_new_tokens=new_tokens, greedy=True, stop_on_eos=False)
    return lambda: torch.tensor(gen.generate_ids(prompt.tolist(), cfg))


@torch.no_grad()
def read_bandwidth(device, mib=512, reps=5):
    """GB/s at which this machine reads memory now: the best of `reps` sums over a buffer far larger than the caches."""
    x = torch.ones(mib * 2 ** 20 // 4, device=device)
    best = float("inf")
    for _ in range(reps + 1):  # the first touches the pages
        sync(device)
        t = time.perf_counter()
        x.sum().item()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best / 1e9


def weight_bytes(model):
    """Bytes a one-token decode step reads: every matrix a Linear multiplies by (the lm_head too, tied or not); the
    embedding lookup reads one row and the norms are tiny, so they are left out."""
    return sum(t.numel() * t.element_size() for m in model.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))
               for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)))


@torch.no_grad()
def tokens_per_sec(run, batch, new_tokens, device, reps=2):
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        run()
    sync(device)
    return batch * new_tokens * reps / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", nargs="+", default=["tiny", "small"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternate MiniGPT and HF this many times; report medians")
    p.add_argument("--vocab", type=int, default=6400)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--compile", action="store_true", help="also measure torch.compile'd MiniGPT")
    p.add_argument("--dtypes", nargs="+", default=None, choices=["fp32", "bf16"],
                   help="training precisions; default both, or fp32 alone on a CPU without AVX-512 BF16/AMX "
                        "(bf16 is emulated there: a bf16 step of the small preset takes minutes)")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's allocator as it is (by default both models run with freed memory kept, "
                        "as the training scripts set it: train_utils.keep_freed_memory)")
    args = p.parse_args()
    for name in args.configs:
        get_config(name)  # an unknown preset fails here, not after minutes of timing
    device = torch.device(resolve_device(args.device))
    if args.dtypes is None:
        args.dtypes = ["fp32", "bf16"] if device.type == "cuda" or cpu_has_fast_bf16() else ["fp32"]
        if args.dtypes == ["fp32"]:
            print("this CPU has no AVX-512 BF16 or AMX: timing fp32 only (--dtypes fp32 bf16 to time emulated bf16 too)")
    kept = False if args.default_malloc else keep_freed_memory(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the training scripts set it
    try:
        import transformers
    except ImportError:
        sys.exit("error: this benchmark compares against transformers: pip install -r requirements-extras.txt")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {where}; "
          f"freed memory kept for reuse: {'yes' if kept else 'no'}")
    fp32_peak = matmul_peak_gflops(device, torch.float32)
    # % peak is against bf16's peak (fp32's when bf16 is not timed: emulated bf16 takes minutes to measure)
    bf16_peak = matmul_peak_gflops(device) if "bf16" in args.dtypes else None
    peak = bf16_peak or fp32_peak
    print(f"bf16 matmul peak: {f'{bf16_peak:.0f} GFLOP/s' if bf16_peak else 'not measured'}; "
          f"fp32 (tf32 on CUDA): {fp32_peak:.0f} GFLOP/s\n")
    print(f"training step (fwd+bwd+AdamW), batch {args.batch} x {args.seq_len}, median of {args.rounds} alternating rounds;")
    print("HF with its default attention (sdpa) and with attn_implementation='eager', which is faster for bf16 training on CPU:")
    print(f"{'config':<8}{'dtype':<6}{'MiniGPT tok/s':>14}{'HF tok/s':>10}{'ratio':>7}{'HF eager-attn':>14}{'ratio':>7}"
          f"{'GFLOP/s':>9}{'% peak':>7}" + (f"{'compiled':>10}{'ratio':>7}{'vs eager':>9}" if args.compile else ""))
    for name in ([] if args.skip_training else args.configs):
        cfg = get_config(name, vocab_size=args.vocab, max_seq_len=max(args.seq_len, 512))
        ours, hf = make_pair(cfg, device)
        hf_eager = make_hf(ours, attn="eager").to(device)
        compiled = torch.compile(MiniGPT(cfg).to(device)) if args.compile else None  # timed in every round too
        for dtype in args.dtypes:
            # alternate the models so that machine noise hits them alike; medians over rounds
            contenders = [(ours, False), (hf, True), (hf_eager, True)] + ([(compiled, False)] if compiled is not None else [])
            runs = [[train_speed(m, is_hf, args.batch, args.seq_len, dtype, args.steps, args.vocab, device)
                     for m, is_hf in contenders] for _ in range(args.rounds)]
            a, b, e, *c = (statistics.median(r[i] for r in runs) for i in range(len(contenders)))
            gflops = a * flops_per_token(cfg, args.seq_len) / 1e9
            line = (f"{name:<8}{dtype:<6}{a:>14,.0f}{b:>10,.0f}{a / b:>7.2f}{e:>14,.0f}{a / e:>7.2f}"
                    f"{gflops:>9.0f}{100 * gflops / peak:>6.0f}%")
            if c:
                line += f"{c[0]:>10,.0f}{c[0] / b:>7.2f}{c[0] / e:>9.2f}"
            print(line, flush=True)
    if args.skip_generation:
        return
    print(f"\ngeneration, greedy, {args.new_tokens} new tokens after a 16-token prompt (KV cache vs HF generate, HF in fp32),")
    print(f"median tokens/s of {args.rounds} alternating rounds;")
    print("MiniGPT in fp32 (the same weights), bf16 weights, int8 weights with bf16 activations" +
          (", and int8 compiled" if args.compile else "") + "; agree: greedy tokens equal to fp32's (fp32's: to HF's)")
    variants = ["fp32", "bf16", "int8"] + (["int8 compiled"] if args.compile else [])
    limits = []  # batch 1 against the weight-bandwidth limit: (config, variant, tok/s, MB a token, limit tok/s)
    print(f"{'config':<8}{'batch':>6}{'HF fp32 tok/s':>14}" + "".join(f"{v:>14}{'ratio':>7}{'agree':>6}" for v in variants))
    for name in args.configs:
        cfg = get_config(name, vocab_size=args.vocab, max_seq_len=512)
        ours, hf = make_pair(cfg, device)
        models = {"fp32": ours,
                  "bf16": copy.deepcopy(ours).to(torch.bfloat16),  # decoding reads every weight per token: half the bytes
                  "int8": quantize_int8(copy.deepcopy(ours)).to(torch.bfloat16)}  # a quarter of the bytes
        for batch in (1, 8):
            # each runner is built (and compiled) once and warmed up; then HF and every variant alternate over rounds
            runners = {"HF": generation_runner(hf, True, batch, args.new_tokens, args.vocab, device)}
            tokens = {}
            for v in variants:
                runners[v] = generation_runner(models[v.split()[0]], False, batch, args.new_tokens, args.vocab, device,
                                               compile=v.endswith("compiled"))
                tokens[v] = runners[v]()
            tokens["HF"] = runners["HF"]()
            speed = {k: [] for k in runners}
            for _ in range(args.rounds):
                for k, run in runners.items():
                    speed[k].append(tokens_per_sec(run, batch, args.new_tokens, device))
            b = statistics.median(speed["HF"])
            line = f"{name:<8}{batch:>6}{b:>14,.0f}"
            for v in variants:
                a = statistics.median(speed[v])
                agree = (tokens[v] == tokens["HF" if v == "fp32" else "fp32"]).float().mean().item()
                line += f"{a:>14,.0f}{a / b:>7.2f}{agree:>6.2f}"
                if batch == 1:
                    limits.append((name, v, a, weight_bytes(models[v.split()[0]]) / 1e6))
            print(line, flush=True)
    bandwidth = read_bandwidth(device)
    # batch 1 reads every weight once a token: at best bandwidth / bytes tokens a second (issue 38's target: >= 50%)
    print(f"\nbatch 1 against the weight-bandwidth limit (memory read {bandwidth:.1f} GB/s, measured now; weights that fit "
          "the caches can beat it):")
    print(f"{'config':<8}{'weights':>8}{'MB/token':>10}{'tok/s':>8}{'limit':>8}{'% of limit':>11}")
    for name, v, speed, mb in limits:
        limit = bandwidth * 1e3 / mb
        print(f"{name:<8}{v:>8}{mb:>10.1f}{speed:>8,.0f}{limit:>8,.0f}{100 * speed / limit:>10.0f}%")


if __name__ == "__main__":
    cli(main)  # bad flags or files: one line, not a traceback
