import os
import re
from pathlib import Path

import pytest
import torch

from generate import GenerationConfig, TextGenerator, process_logits, sample_from
from model import MiniGPT, MiniGPTConfig
from tokenizer import BPETokenizer


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    tok = BPETokenizer.train(["hello world, the quick brown fox jumps over the lazy dog"] * 5, 300, verbose=False)
    model = MiniGPT(MiniGPTConfig(vocab_size=tok.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64))
    return TextGenerator(model, tok)


def full_forward_greedy(model, ids, n):
    ids = list(ids)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids


def test_greedy_with_cache_matches_recomputing_everything(gen):
    prompt = [1] + gen.tokenizer.encode("the quick")
    cfg = GenerationConfig(max_new_tokens=10, greedy=True, stop_on_eos=False)
    assert gen.generate_ids([prompt], cfg)[0] == full_forward_greedy(gen.model, prompt, 10)[len(prompt):]


def test_batch_of_different_lengths_matches_one_by_one(gen):
    prompts = [[1] + gen.tokenizer.encode(t) for t in ("hello", "the quick brown fox", "lazy")]
    cfg = GenerationConfig(max_new_tokens=8, greedy=True, stop_on_eos=False)
    batched = gen.generate_ids(prompts, cfg)
    assert batched == [gen.generate_ids([p], cfg)[0] for p in prompts]
    assert gen.generate([], cfg) == [] and gen.generate([], GenerationConfig(num_beams=2)) == []  # was a max() error


def test_rows_with_the_same_prompt_share_one_prefill(gen, monkeypatch):
    """GRPO asks each question num_generations times: the prompt runs once and its keys/values are copied, and every
    row then decodes as if it had been prefilled on its own."""
    a, b = ([1] + gen.tokenizer.encode(t) for t in ("the quick brown fox", "lazy"))
    batch_sizes = []
    forward = gen.model.forward
    monkeypatch.setattr(gen.model, "forward", lambda idx, **kw: batch_sizes.append(idx.shape[0]) or forward(idx, **kw))
    cache, logits, _ = gen._prefill([a, b, a, a], 8)
    assert batch_sizes == [2] and logits.shape[0] == 4 and cache.k[0].shape[0] == 4 and cache.pad_lens.tolist() == [0, 3, 0, 0]
    assert torch.equal(logits[0], logits[2]) and torch.equal(cache.v[-1][0], cache.v[-1][3])
    monkeypatch.undo()
    cfg = GenerationConfig(max_new_tokens=8, greedy=True, stop_on_eos=False)
    assert gen.generate_ids([a, b, a, a], cfg) == [gen.generate_ids([p], cfg)[0] for p in (a, b, a, a)]


def test_seed_makes_sampling_reproducible(gen):
    cfg = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=123, stop_on_eos=False)
    assert gen.generate("hello", cfg) == gen.generate("hello", cfg)


def test_top_k_one_is_greedy(gen):
    sampled = gen.generate("the", GenerationConfig(max_new_tokens=8, top_k=1, seed=5, stop_on_eos=False))
    assert sampled == gen.generate("the", GenerationConfig(max_new_tokens=8, greedy=True, stop_on_eos=False))


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    out = process_logits(logits, GenerationConfig(top_p=0.7))
    assert torch.isfinite(out[0, :2]).all() and torch.isinf(out[0, 2:]).all()


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 2.0]])
    seen = torch.tensor([[True, True, False]])
    out = process_logits(logits, GenerationConfig(greedy=True, repetition_penalty=2.0), seen)
    assert out.tolist() == [[1.0, -2.0, 2.0]]


def test_stop_string_cuts_the_text(gen):
    cfg = GenerationConfig(max_new_tokens=30, greedy=True, stop_on_eos=False)
    text = gen.generate("hello", cfg)
    stop = text[3:5]
    cut = gen.generate("hello", GenerationConfig(max_new_tokens=30, greedy=True, stop_on_eos=False, stop_strings=[stop]))
    assert cut == text[:text.index(stop)]


def test_streaming_concatenates_to_the_full_continuation(gen):
    cfg = GenerationConfig(max_new_tokens=15, greedy=True, stop_on_eos=False)
    assert "".join(gen.stream("hello", cfg)) == gen.generate("hello", cfg)


def sequence_logprob(model, prompt, new):
    ids = torch.tensor([prompt + new])
    logprobs = model(ids).logits.log_softmax(-1)[0, len(prompt) - 1:-1]
    return logprobs.gather(-1, torch.tensor(new)[:, None]).sum().item()


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(gen):
    prompt = [1] + gen.tokenizer.encode("the")
    greedy = gen.generate_ids([prompt], GenerationConfig(max_new_tokens=6, greedy=True, stop_on_eos=False))[0]
    beam = gen.generate_ids([prompt], GenerationConfig(max_new_tokens=6, num_beams=4, length_penalty=0.0, stop_on_eos=False))[0]
    assert len(beam) == 6
    assert sequence_logprob(gen.model, prompt, beam) >= sequence_logprob(gen.model, prompt, greedy) - 1e-5


def test_one_beam_equals_greedy(gen):
    prompt = [1] + gen.tokenizer.encode("hello")
    greedy = gen.generate_ids([prompt], GenerationConfig(max_new_tokens=6, greedy=True, stop_on_eos=False))[0]
    beam = gen.generate_ids([prompt], GenerationConfig(max_new_tokens=6, num_beams=2, stop_on_eos=False))[0]
    assert sequence_logprob(gen.model, prompt, beam) >= sequence_logprob(gen.model, prompt, greedy) - 1e-5


def test_bf16_model_generates_like_fp32_on_a_short_greedy_run(gen):
    import copy
    bf16 = TextGenerator(copy.deepcopy(gen.model).to(torch.bfloat16), gen.tokenizer)
    cfg = GenerationConfig(max_new_tokens=3, greedy=True, stop_on_eos=False)
    prompt = [1] + gen.tokenizer.encode("the quick brown")
    out = bf16.generate_ids([prompt], cfg)[0]
    assert len(out) == 3 and all(0 <= t < gen.tokenizer.vocab_size for t in out)
    logits32 = gen.model(torch.tensor([prompt])).logits[0, -1]
    logits16 = bf16.model(torch.tensor([prompt])).logits[0, -1].float()
    assert torch.allclose(logits16, logits32, atol=0.05)


def test_bf16_model_decodes_over_an_fp32_cache_like_its_full_forward(gen):
    import copy
    model = copy.deepcopy(gen.model).to(torch.bfloat16)
    bf16 = TextGenerator(model, gen.tokenizer)
    prompt = [1] + gen.tokenizer.encode("the quick brown")
    cache, _, _ = bf16._prefill([prompt[:-1]], 4)
    assert cache.k[0].dtype == torch.float32  # on CPU the cache is fp32 whatever the model's dtype
    step = model(torch.tensor([prompt[-1:]]), cache=cache, last_logits_only=True).logits[0, -1].float()
    full = model(torch.tensor([prompt])).logits[0, -1].float()
    assert torch.allclose(step, full, atol=0.05)


def test_compiled_generator_gives_the_same_tokens(gen):
    compiled = TextGenerator(gen.model, gen.tokenizer, compile=True)
    assert hasattr(compiled.forward, "_orig_mod")  # torch.compile's wrapper, not the model itself
    cfg = GenerationConfig(max_new_tokens=6, greedy=True, stop_on_eos=False)
    prompts = [[1] + gen.tokenizer.encode("the quick"), [1] + gen.tokenizer.encode("hello world, the")]
    assert compiled.generate_ids(prompts, cfg) == gen.generate_ids(prompts, cfg)
    assert compiled.step_ran  # the compiled decode step ran (no silent fall back to eager)
    one = [[1] + gen.tokenizer.encode("the lazy")]  # batch 1: the one-row matmuls as multiply-and-sum (model.Linear)
    assert compiled.generate_ids(one, cfg) == gen.generate_ids(one, cfg)


def test_compiled_step_reads_a_growing_number_of_slots_from_one_graph(gen):
    """The compiled step reads only the filled cache slots, their number a symbolic size: one graph serves every step
    of a generation (a recompile per step would hit dynamo's limit and fall back to eager, silently slow)."""
    from torch._dynamo.utils import counters
    compiled = TextGenerator(gen.model, gen.tokenizer, compile=True)
    cfg = GenerationConfig(max_new_tokens=12, greedy=True, stop_on_eos=False)
    prompts = [[1] + gen.tokenizer.encode("a b"), [1] + gen.tokenizer.encode("the quick brown fox")]  # batch 2
    graphs = counters["stats"]["unique_graphs"]
    assert compiled.generate_ids(prompts, cfg) == gen.generate_ids(prompts, cfg)
    assert counters["stats"]["unique_graphs"] - graphs == 1  # 11 steps, 7 to 17 slots read, one graph
    # up to the last position the model has: every slot of max_seq_len filled, still that graph
    long = [[1] + gen.tokenizer.encode("the quick brown fox")]
    full = GenerationConfig(max_new_tokens=gen.model.config.max_seq_len - len(long[0]), greedy=True, stop_on_eos=False)
    graphs = counters["stats"]["unique_graphs"]
    assert compiled.generate_ids(long, full) == gen.generate_ids(long, full)
    assert counters["stats"]["unique_graphs"] - graphs == 1  # batch 1: its own graph, one for every step


def test_compiled_sampling_for_rl_reads_the_weights_as_they_train(gen):
    """freeze=False (train_grpo/train_ppo --compile-sampling): the compiled step reads the weights an optimizer has
    changed in place since, where freezing would have baked the old ones into the graph."""
    import copy
    model = copy.deepcopy(gen.model)
    compiled, eager = TextGenerator(model, gen.tokenizer, compile=True, freeze=False), TextGenerator(model, gen.tokenizer)
    cfg = GenerationConfig(max_new_tokens=6, greedy=True, stop_on_eos=False)
    prompts = [[1] + gen.tokenizer.encode("the quick"), [1] + gen.tokenizer.encode("hello world, the")]
    before = eager.generate_ids(prompts, cfg)
    assert compiled.generate_ids(prompts, cfg) == before
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # a (large) optimizer step, in place
    after = eager.generate_ids(prompts, cfg)
    assert after != before and compiled.generate_ids(prompts, cfg) == after


def test_the_compiled_step_draws_the_next_token_as_the_eager_ops_would(gen):
    """pick_in_step: the compiled step also applies the temperature and draws (sample_from at uniform numbers drawn
    from the same generator in the same order), so only the first token (from the prompt's logits) is picked eagerly;
    the tokens are those of the eager pick after the compiled step, and of the eager model."""
    import copy
    compiled = TextGenerator(copy.deepcopy(gen.model), gen.tokenizer, compile=True, freeze=False)
    cfg = GenerationConfig(max_new_tokens=8, temperature=0.8, seed=3, stop_on_eos=False)
    prompts = [[1] + gen.tokenizer.encode(t) for t in ("the quick", "hello world, the", "lazy")]
    eager_picks = []
    compiled._pick = lambda *a: eager_picks.append(1) or TextGenerator._pick(*a)
    in_step = compiled.generate_ids(prompts, cfg)
    assert len(eager_picks) == 1 and compiled.step_ran
    compiled.pick_in_step = False
    assert compiled.generate_ids(prompts, cfg) == in_step == gen.generate_ids(prompts, cfg)
    assert len(eager_picks) == 1 + 8


def test_a_step_that_cannot_compile_falls_back_to_eager_with_one_warning(gen, capsys):
    compiled = TextGenerator(gen.model, gen.tokenizer, compile=True)

    def cannot_compile(*args):
        raise RuntimeError("InductorError: no C++ compiler found\n(the rest of a long message)")

    compiled.step = cannot_compile
    cfg = GenerationConfig(max_new_tokens=5, greedy=True, stop_on_eos=False)
    prompts = [[1] + gen.tokenizer.encode("the quick"), [1] + gen.tokenizer.encode("lazy dog")]
    assert compiled.generate_ids(prompts, cfg) == gen.generate_ids(prompts, cfg)
    err = capsys.readouterr().err
    assert err.count("warning: torch.compile failed, decoding without it") == 1 and "no C++ compiler" in err
    assert "the rest of a long message" not in err and compiled.step is None


def test_sample_from_draws_each_token_at_its_probability_and_never_an_impossible_one(monkeypatch):
    probs = torch.tensor([[0.0, 0.1, 0.2, 0.0, 0.3, 0.4, 0.0]]).repeat(40000, 1)
    draws = sample_from(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=7) / len(draws)
    assert freq[[0, 3, 6]].sum() == 0  # probability 0 (top-k/top-p's cut): never drawn
    assert torch.allclose(freq, probs[0], atol=0.01)  # 40,000 draws: each share within 4 standard deviations
    rows = torch.rand(50, 7).softmax(-1)
    assert torch.equal(*[sample_from(rows, torch.Generator().manual_seed(3)) for _ in range(2)])  # seeded: repeatable
    # a uniform number that rounds up to the row's total would index past the end: the likeliest token instead
    monkeypatch.setattr(torch, "rand", lambda *shape, generator=None, device=None: torch.ones(*shape))
    assert sample_from(probs[:2]).tolist() == [5, 5]


def make_run_dir(path, gen):
    """A run directory as the training scripts write it, around the fixture's model and tokenizer."""
    import os
    from train_utils import save_checkpoint, write_json
    os.makedirs(path, exist_ok=True)
    gen.tokenizer.save(os.path.join(path, "tokenizer.json"))
    write_json(os.path.join(path, "config.json"), {"stage": "test", "model": gen.model.config.to_dict()})
    save_checkpoint(os.path.join(path, "ckpt_best.pt"), {"model": gen.model.state_dict(),
                                                         "model_config": gen.model.config.to_dict()})
    return path


def run_cli(args, **kw):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "generate.py", *args], cwd=root, capture_output=True, text=True, **kw)


def test_cli_prints_only_the_continuation(gen, tmp_path):
    run = make_run_dir(str(tmp_path / "run"), gen)
    r = run_cli(["--checkpoint", run, "--prompt", "hello", "--max-new-tokens", "8", "--greedy"])
    expected = gen.generate("hello", GenerationConfig(max_new_tokens=8, greedy=True))
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected + "\n"


def test_cli_int8_prints_what_the_quantized_model_generates(gen, tmp_path):
    import copy
    from model import quantize_int8
    run = make_run_dir(str(tmp_path / "run"), gen)
    r = run_cli(["--checkpoint", run, "--prompt", "hello", "--max-new-tokens", "8", "--greedy", "--quantize", "int8"])
    quantized = TextGenerator(quantize_int8(copy.deepcopy(gen.model)).to(torch.bfloat16), gen.tokenizer)
    assert r.returncode == 0, r.stderr
    assert r.stdout == quantized.generate("hello", GenerationConfig(max_new_tokens=8, greedy=True)) + "\n"


def test_cli_chat_answers_each_turn_and_exits(gen, tmp_path):
    run = make_run_dir(str(tmp_path / "run"), gen)
    r = run_cli(["--checkpoint", run, "--chat", "--max-new-tokens", "5", "--greedy"], input="hi\nthe fox\nexit\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("assistant> ") == 2


def test_cli_missing_checkpoint_is_a_one_line_error(tmp_path):
    r = run_cli(["--checkpoint", str(tmp_path / "nope"), "--prompt", "x"])
    assert r.returncode != 0 and r.stderr.strip() == f"error: {tmp_path / 'nope'}: checkpoint directory not found"


def test_a_hugging_face_folder_says_how_to_import_it(tmp_path):
    import argparse
    import train_utils as tu
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "llama"}')
    (hf / "model.safetensors").write_bytes(b"")
    r = run_cli(["--checkpoint", str(hf), "--prompt", "x"])  # was "config.json: no 'model' object ..."
    assert r.returncode != 0 and r.stderr.strip() == (f"error: {hf}: a Hugging Face model folder, not a run directory; "
                                                      f"make one with `python export_hf.py --import-hf {hf} --out DIR`")
    with pytest.raises(ValueError, match="a Hugging Face model folder"):  # was "no checkpoint; run train_pretrain.py"
        tu.default_init_from(argparse.Namespace(init_from=str(hf), config="tiny"), "sft", "train_sft.py")


@pytest.mark.parametrize("damage,message", [
    (lambda run: Path(run, "config.json").write_text('{"model": '), r"config.json: Expecting value"),
    (lambda run: Path(run, "config.json").write_text('{"model": {"dim": "big"}}'), r"config.json: model config: field 'dim' should be int"),
    (lambda run: os.truncate(Path(run, "ckpt_best.pt"), 2000), r"ckpt_best.pt: not a loadable checkpoint"),
    # a bare state_dict and a foreign object were AttributeError / TypeError tracebacks
    (lambda run: torch.save(torch.load(Path(run, "ckpt_best.pt"))["model"], Path(run, "ckpt_best.pt")),
     r"ckpt_best.pt: not a checkpoint written by a train_\*.py script \(it holds bare weights, a state_dict"),
    (lambda run: torch.save([1, 2], Path(run, "ckpt_best.pt")), r"ckpt_best.pt: not a checkpoint .*\(no 'model' entry\)"),
])
def test_cli_damaged_run_directory_is_a_one_line_error(gen, tmp_path, damage, message):
    run = make_run_dir(str(tmp_path / "run"), gen)
    damage(run)
    r = run_cli(["--checkpoint", run, "--prompt", "x"])
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and re.search(message, r.stderr), r.stderr


@pytest.mark.parametrize("flags,message", [
    (["--top-p", "2"], "error: generation: top_p must be in (0, 1], got 2.0"),
    (["--num-beams", "0"], "error: generation: num_beams must be at least 1, got 0"),
    (["--stop", ""], "error: generation: stop_strings must be non-empty strings"),
    pytest.param(["--device", "cuda"], "error: --device cuda: no CUDA GPU is visible",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs hardware: a machine without a GPU (a GPU is visible)")),
])
def test_cli_bad_flags_are_a_one_line_error(gen, tmp_path, flags, message):
    run = make_run_dir(str(tmp_path / "run"), gen)
    r = run_cli(["--checkpoint", run, "--prompt", "x"] + flags)
    assert r.returncode != 0 and r.stderr.strip().startswith(message) and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_keeps_freed_memory_on_cpu_as_the_benchmark_measures(gen, tmp_path, monkeypatch, capsys):
    import generate
    run = make_run_dir(str(tmp_path / "run"), gen)
    calls = []
    monkeypatch.setattr(generate, "keep_freed_memory", lambda device: calls.append(device) or True)
    monkeypatch.setattr("sys.argv", ["generate.py", "--checkpoint", run, "--prompt", "hello", "--max-new-tokens", "2",
                                     "--greedy", "--no-stream"])
    generate.main()
    assert calls == ["cpu"] and capsys.readouterr().out.strip()


def test_what_does_not_fit_max_seq_len_is_said_once(capsys):
    # max_seq_len 64: a 100-token prompt keeps its last 63 tokens and gets one new one; this used to be silent
    torch.manual_seed(0)
    tok = BPETokenizer.train(["hello world, the quick brown fox jumps over the lazy dog"] * 5, 300, verbose=False)
    g = TextGenerator(MiniGPT(MiniGPTConfig(vocab_size=tok.vocab_size, dim=64, n_layers=2, n_heads=4, max_seq_len=64)), tok)
    cfg = GenerationConfig(greedy=True, max_new_tokens=10, stop_on_eos=False)
    assert len(g.generate_ids([[5] * 100], cfg)[0]) == 1
    assert capsys.readouterr().err == ("warning: a 100-token prompt and 10 new tokens exceed max_seq_len 64: kept the "
                                       "last 63 prompt tokens, generating at most 1\n")
    assert len(g.generate_ids([[5] * 100], cfg)[0]) == 1 and capsys.readouterr().err == ""  # once per generator
    fresh = TextGenerator(g.model, tok)
    assert len(fresh.generate_ids([[5] * 10], GenerationConfig(greedy=True, max_new_tokens=80, stop_on_eos=False))[0]) == 54
    assert capsys.readouterr().err.endswith("new tokens exceed max_seq_len 64: generating at most 54\n")


def test_cli_which_picks_best_or_latest_and_says_which_file_and_step_it_loaded(gen, tmp_path):
    import copy
    from train_utils import save_checkpoint
    run = make_run_dir(str(tmp_path / "run"), gen)
    later = copy.deepcopy(gen.model)
    with torch.no_grad():
        later.embed.weight.mul_(-1)  # other weights: another continuation
    save_checkpoint(os.path.join(run, "ckpt_latest.pt"), {"model": later.state_dict(), "step": 200,
                                                          "model_config": later.config.to_dict()})
    cfg = GenerationConfig(max_new_tokens=8, greedy=True)
    for which, model in (("best", gen.model), ("latest", later)):
        r = run_cli(["--checkpoint", run, "--prompt", "hello", "--max-new-tokens", "8", "--greedy", "--which", which])
        assert r.returncode == 0, r.stderr
        assert r.stdout == TextGenerator(model, gen.tokenizer).generate("hello", cfg) + "\n"
        step = "?" if which == "best" else "200"  # the fixture's best checkpoint records no step
        assert f"loaded {os.path.join(run, f'ckpt_{which}.pt')} (step {step})" in r.stderr


def test_cli_chat_on_a_model_never_chat_tuned_says_so_once(gen, tmp_path):
    import json
    run = make_run_dir(str(tmp_path / "run"), gen)
    config = json.load(open(os.path.join(run, "config.json")))
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({**config, "stage": "pretrain"}, f)
    r = run_cli(["--checkpoint", run, "--chat", "--max-new-tokens", "3", "--greedy"], input="hi\nagain\nexit\n")
    assert r.returncode == 0 and r.stderr.count("is a pretraining run, never chat-tuned") == 1
    r = run_cli(["--checkpoint", make_run_dir(str(tmp_path / "sft"), gen), "--chat", "--max-new-tokens", "3"], input="hi\nexit\n")
    assert r.returncode == 0 and "never chat-tuned" not in r.stderr


# ----------------------------------------------------------------------------- tools and reasoning
def test_tool_calls_run_inside_the_loop_and_the_cache_continues_as_a_fresh_prefill_would(memorized):
    import tools
    from generate import load_generator
    from tiny_runs import TOOL_ANSWER, TOOL_QUESTION
    gen = load_generator(memorized)
    tok, greedy = gen.tokenizer, GenerationConfig(greedy=True, max_new_tokens=120)
    question = [{"role": "user", "content": TOOL_QUESTION}]
    prompt = tok.apply_chat_template(question, add_generation_prompt=True, tools=[tools.CALCULATOR_TOOL])[0]
    rows, by_model, calls = gen.generate_with_tools([prompt, prompt], greedy)  # a batch: rows in step
    assert rows[0] == rows[1] and [(c["name"], r, ok) for c, r, ok in calls[0]] == [("calculator", "834", True)]
    text = tok.decode(rows[0])
    assert text.endswith(f"{TOOL_ANSWER}<|im_end|>") and "<tool_response>\n834\n</tool_response>" in text
    fed = [t for t, m in zip(rows[0], by_model[0]) if not m]  # the tool's turn, exactly as the template renders it
    assert fed == tools.tool_turn_ids(tok, ["834"])
    # the answer after the tool turn is what a fresh prefill of the whole conversation so far gives
    first_turn = rows[0][:rows[0].index(tok.eos_id) + 1] + fed
    fresh = gen.generate_ids([prompt + first_turn], greedy)[0]
    assert rows[0][len(first_turn):] == fresh


def test_thinking_on_and_off(memorized):
    from generate import load_generator
    from tiny_runs import QUICK_ANSWER, QUICK_QUESTION, THINK_ANSWER, THINK_QUESTION, THINK_STEPS
    from tools import parse_assistant
    gen = load_generator(memorized)
    greedy = GenerationConfig(greedy=True, max_new_tokens=120)

    def answer(question, thinking):
        ids = gen.tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                                enable_thinking=thinking)[0]
        text = gen.tokenizer.decode(gen.generate_with_tools([ids], greedy, max_tool_calls=0)[0][0])
        return parse_assistant(("" if thinking else "<think>\n\n</think>") + text)
    assert answer(THINK_QUESTION, True) == {"reasoning_content": THINK_STEPS, "content": THINK_ANSWER, "tool_calls": [],
                                            "finished": True}
    assert answer(QUICK_QUESTION, False)["content"] == QUICK_ANSWER


def test_cli_tools_shows_the_call_its_result_and_the_answer(memorized):
    from tiny_runs import TOOL_ANSWER, TOOL_QUESTION
    r = run_cli(["--checkpoint", memorized, "--prompt", TOOL_QUESTION, "--tools", "calculator", "--greedy",
                 "--max-new-tokens", "120"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"user: {TOOL_QUESTION}", 'tool call: calculator({"expression": "478 + 356"}) -> 834',
                                     f"assistant: {TOOL_ANSWER}"]
