"""
serve.py under load: throughput and latency at 1, 4 and 16 concurrent clients with continuous batching, against the
same server decoding one sequence at a time (--max-batch 1, the reference, measured in the same run); then a bounded
load test on loopback: 200 requests from 16 clients, one in ten malformed, some streamed, some with n=2.
It checks that every request is answered, none with a 5xx, and that the server's memory returns to its warm
baseline once idle.

    python bench/bench_serve.py --checkpoint checkpoints/sft_tiny
    python bench/bench_serve.py --config small --requests 32 --max-tokens 64    # a random model of a preset

Without --checkpoint a randomly initialised model of --config is served (speed does not depend on the weights;
sampling is seeded per request, so both servers generate the same tokens).
"""
import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from builtin_data import checkable_prompts  # noqa: E402
from model import MiniGPT, get_config  # noqa: E402
from tokenizer import BPETokenizer  # noqa: E402
from common import cli, save_checkpoint, write_json  # noqa: E402


def random_run_dir(config, folder):
    """A run directory holding a randomly initialised model of a preset and a tokenizer trained on the built-in data."""
    from builtin_data import pretrain_texts
    tokenizer = BPETokenizer.train(pretrain_texts()[:2000], get_config(config).vocab_size, verbose=False, max_cjk_chars=2)
    cfg = get_config(config, vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    model = MiniGPT(cfg)
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    write_json(os.path.join(folder, "config.json"), {"stage": "sft", "model": cfg.to_dict()})
    save_checkpoint(os.path.join(folder, "ckpt_best.pt"), {"model": model.state_dict(), "model_config": cfg.to_dict(),
                                                           "step": 0})
    return folder


class Server:
    """serve.py in its own process on a free loopback port."""

    def __init__(self, checkpoint, max_batch, extra=()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "serve.py"), "--checkpoint", checkpoint,
                                      "--port", str(self.port), "--max-batch", str(max_batch), "--quiet", *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve.py exited: {self.proc.stderr.read()[-2000:]}")
            try:
                self.health()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("serve.py did not start within 120 s")

    def health(self):
        with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
            return json.loads(r.read())

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def wait_idle(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline and (self.health()["active"] or self.health()["waiting"]):
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def post(url, body, raw=None, timeout=300):
    """(status, parsed JSON or streamed text, seconds). A stream's text is its data: lines joined."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            payload = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        payload, status = e.read().decode(), e.code
    seconds = time.perf_counter() - start
    if body is not None and body.get("stream") and status == 200:
        return status, payload, seconds
    return status, json.loads(payload), seconds


def requests_for(n, max_tokens):
    questions = [it["prompt"] for it in checkable_prompts(split="heldout")]
    return [{"messages": [{"role": "user", "content": questions[i % len(questions)]}], "max_tokens": max_tokens,
             "temperature": 1.0, "seed": i} for i in range(n)]


def measure(server, bodies, clients):
    """Send every body with `clients` concurrent clients: (completion tokens per second, latencies)."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda b: post(server.url, b), bodies))
    wall = time.perf_counter() - start
    bad = [r for r in results if r[0] != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed, e.g. {bad[0][:2]}")
    tokens = sum(r[1]["usage"]["completion_tokens"] for r in results)
    return tokens / wall, [r[2] for r in results], tokens


MALFORMED = [  # (raw body or None, body): what a client gets wrong
    (b'{"messages": [', None),
    (None, {"messages": [{"role": "wizard", "content": "hi"}]}),
    (None, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
    (None, {"messages": "hi"}),
    (b" " * (300 * 1024), None),  # over the body limit
]


def load_test(server, n, clients, max_tokens):
    """n requests from `clients` clients; every 10th malformed, every 7th streamed, every 5th with n=2."""
    jobs = []
    for i, body in enumerate(requests_for(n, max_tokens)):
        if i % 10 == 9:
            raw, bad = MALFORMED[(i // 10) % len(MALFORMED)]
            jobs.append((raw, bad))
        else:
            jobs.append((None, {**body, "stream": i % 7 == 0, "n": 2 if i % 5 == 0 else 1}))
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda job: post(server.url, job[1], raw=job[0]), jobs))
    statuses = [r[0] for r in results]
    return {"sent": n, "answered": len(results), "2xx": sum(200 <= s < 300 for s in statuses),
            "4xx": sum(400 <= s < 500 for s in statuses), "5xx": sum(s >= 500 for s in statuses),
            "malformed_sent": sum(1 for raw, body in jobs if raw is not None or "max_tokens" not in body or
                                  body.get("max_tokens") == 0 or not isinstance(body.get("messages"), list) or
                                  body["messages"][0]["role"] == "wizard")}


def percentile(values, q):
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="a run directory (default: a random model of --config)")
    p.add_argument("--config", default="tiny", help="preset of the random model when no --checkpoint is given")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--load-requests", type=int, default=200)
    p.add_argument("--load-clients", type=int, default=16)
    args = p.parse_args()
    if args.checkpoint and not os.path.isdir(args.checkpoint):
        raise FileNotFoundError(f"{args.checkpoint}: run directory not found")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or random_run_dir(args.config, tmp)
        print(f"model: {checkpoint}; {args.requests} chat requests of {args.max_tokens} new tokens (sampled, seeded)")
        rows = []
        for mode, max_batch in (("batched", max(args.clients)), ("sequential", 1)):
            server = Server(checkpoint, max_batch)
            try:
                post(server.url, requests_for(1, 4)[0])  # warm-up
                for clients in args.clients:
                    tokens_per_sec, latencies, tokens = measure(server, requests_for(args.requests, args.max_tokens), clients)
                    rows.append((mode, clients, tokens_per_sec, latencies, tokens))
            finally:
                server.stop()
        print(f"\n{'clients':>7} {'batched tok/s':>14} {'sequential tok/s':>17} {'ratio':>6} "
              f"{'latency p50 / p95 (s), batched':>31} {'sequential':>14}")
        for clients in args.clients:
            b = next(r for r in rows if r[0] == "batched" and r[1] == clients)
            s = next(r for r in rows if r[0] == "sequential" and r[1] == clients)
            print(f"{clients:>7} {b[2]:>14,.0f} {s[2]:>17,.0f} {b[2] / s[2]:>6.2f} "
                  f"{percentile(b[3], 50):>15.2f} / {percentile(b[3], 95):<13.2f} {percentile(s[3], 50):>6.2f} / "
                  f"{percentile(s[3], 95):.2f}")
        same = len({r[4] for r in rows}) == 1  # seeded sampling: the same tokens however the requests were batched
        print(f"completion tokens per level: {rows[0][4]} in both modes: {'yes' if same else 'NO'}")

        server = Server(checkpoint, max(args.clients))
        try:
            load_test(server, 32, args.load_clients, args.max_tokens)  # warm: the allocator's pools fill once
            server.wait_idle()
            baseline = server.rss_mb()
            start = time.perf_counter()
            result = load_test(server, args.load_requests, args.load_clients, args.max_tokens)
            seconds = time.perf_counter() - start
            server.wait_idle()
            after = server.rss_mb()
            alive = server.health()["status"] == "ok"
        finally:
            server.stop()
        print(f"\nload test: {result['sent']} requests from {args.load_clients} clients in {seconds:.1f} s: "
              f"{result['answered']} answered, {result['2xx']} 2xx, {result['4xx']} 4xx (malformed sent: "
              f"{result['malformed_sent']}), {result['5xx']} 5xx; server RSS {baseline:.0f} MB warm, {after:.0f} MB "
              f"after ({after - baseline:+.0f} MB); still serving: {alive}")
        if result["5xx"] or result["answered"] != result["sent"] or result["4xx"] != result["malformed_sent"] or not alive:
            raise SystemExit("error: the load test failed (see the line above)")


if __name__ == "__main__":
    cli(main)
