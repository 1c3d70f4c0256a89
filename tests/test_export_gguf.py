"""export_gguf.py: the .gguf that transformers loads gives our logits and our token ids; every type reads back to
the weights; what cannot be exported exactly is refused with one line (skipped without the extras)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from export_gguf import export, gguf_tensors, modelfile, rotary_rows
from test_export_hf import make_run_dir
from tokenizer import DIGITS_PATTERN, BPETokenizer

gguf = pytest.importorskip("gguf", reason="optional: pip install -r requirements-extras.txt")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# English, Chinese (whose 2-character cap lives in the merges), digits, code, whitespace runs and special-token
# look-alikes: each is a place where a pre-tokenizer that differs from ours would split differently
CORPUS = ["the quick brown fox jumps over the lazy dog", "孙悟空大闹天宫，天宫大乱。", "In 2024 it cost 1234567.89 $",
          "def f(x):\n    return x  # twice\n\n\n", "<|im_start|>user\nhi<|im_end|>", "don't we'll THEY'RE  ok\t!"]


def test_q_and_k_rows_go_from_rotated_halves_to_adjacent_pairs():
    w = torch.arange(8.0)[:, None].expand(8, 3)  # 2 heads of 4 rows: each head's halves [0 1 | 2 3]
    assert rotary_rows(w, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_transformers_loads_the_f32_file_with_our_logits_and_our_token_ids(tmp_path, tied):
    pytest.importorskip("transformers", reason="optional: pip install -r requirements-extras.txt")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, tok = make_run_dir(str(tmp_path / "run"), tie_embeddings=tied)
    export(str(tmp_path / "run"), str(tmp_path / "m.gguf"), "f32")
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    for text in CORPUS:  # transformers always parses special tokens in text: compare with ours doing the same
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text, allow_special=True), text
    assert hf_tok("the fox")["input_ids"] == [tok.bos_id] + tok.encode("the fox")  # add_bos_token, as generate.py
    ids = torch.tensor([[tok.bos_id] + tok.encode(" ".join(CORPUS))[:60]])
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, model(ids).logits, atol=1e-4)


def test_a_one_token_per_digit_tokenizer_exports_with_the_same_ids(tmp_path):
    """--tokenizer-digits split (the reasoning chains'): no token joins a digit to anything, so GPT-2's split gives
    our ids; transformers reads the file's tokenizer back with them."""
    pytest.importorskip("transformers", reason="optional: pip install -r requirements-extras.txt")
    from transformers import AutoTokenizer
    make_run_dir(str(tmp_path / "run"))
    split = BPETokenizer.train(["What is 478 plus 356? 12 cats  7 dogs, 孙悟空 1998"] * 5, 317, verbose=False,
                               pattern=DIGITS_PATTERN)
    split.save(str(tmp_path / "run" / "tokenizer.json"))
    export(str(tmp_path / "run"), str(tmp_path / "m.gguf"))
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    for text in CORPUS + ["What is 478 plus 356?", "a   7 b  12", "x12y 3.5"]:
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == split.encode(text, allow_special=True), text


@pytest.mark.parametrize("out_type,tolerance", [("f16", 2e-3), ("bf16", 2e-2), ("q8_0", 2e-2)])
def test_every_type_reads_back_to_the_weights_norms_stay_f32(tmp_path, out_type, tolerance):
    model, tok = make_run_dir(str(tmp_path / "run"))
    path = str(tmp_path / f"m-{out_type}.gguf")
    export(str(tmp_path / "run"), path, out_type)
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    expected = dict(gguf_tensors(model))
    assert set(tensors) == set(expected)
    for name, want in expected.items():
        t = tensors[name]
        raw = t.data if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else t.data.view(np.uint8)
        got = gguf.quants.dequantize(raw, t.tensor_type).reshape(want.shape)
        if want.ndim == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert np.abs(got - want).max() <= tolerance * max(1.0, np.abs(want).max()), name
    kv = {f.name: f for f in reader.fields.values()}
    assert bytes(kv["tokenizer.ggml.pre"].parts[-1]).decode() == "gpt-2"
    assert bytes(kv["general.architecture"].parts[-1]).decode() == "llama"
    assert int(kv["llama.block_count"].parts[-1][0]) == model.config.n_layers


def test_the_modelfile_renders_our_chatml_turns():
    """ollama cannot be installed here: the template's pieces are checked against our chat template's text for one
    conversation (the Go template's range writes each message as below, then the assistant's header)."""
    text = modelfile("m.gguf")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    rendered = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"
    tok = BPETokenizer.train(["Be brief. Hi Hello. Bye"] * 3, 300, verbose=False)
    assert tok.apply_chat_template(messages, add_generation_prompt=True)[0] == tok.encode(rendered, allow_special=True)
    assert "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n" in text
    assert text.startswith("FROM ./m.gguf\n") and 'PARAMETER stop "<|im_end|>"' in text


def test_what_cannot_be_exported_exactly_is_refused_in_one_line(tmp_path):
    make_run_dir(str(tmp_path / "moe"), n_experts=4, experts_per_token=2)
    with pytest.raises(ValueError, match="mixture-of-experts .* refused"):
        export(str(tmp_path / "moe"), str(tmp_path / "moe.gguf"))
    make_run_dir(str(tmp_path / "own"))
    own = BPETokenizer.train(["12345 the fox"] * 3, 300, verbose=False, pattern=r"\p{L}+|\p{N}+|\s+|[^\s\p{L}\p{N}]+")
    own.save(str(tmp_path / "own" / "tokenizer.json"))
    with pytest.raises(ValueError, match="splits with its own pattern.*refused"):
        export(str(tmp_path / "own"), str(tmp_path / "d.gguf"))
    assert not os.path.exists(tmp_path / "moe.gguf") and not os.path.exists(tmp_path / "d.gguf")


@pytest.mark.parametrize("case,expected", [
    ("no weights", "no config.json"), ("exists", "exists; pass --overwrite"), ("type", "invalid choice: 'q4'")])
def test_bad_input_is_one_line(tmp_path, case, expected):
    run = str(tmp_path / "run")
    make_run_dir(run)
    out = str(tmp_path / "m.gguf")
    args = ["--checkpoint", run, "--out", out]
    if case == "no weights":
        args[1] = str(tmp_path)
    elif case == "exists":
        open(out, "w").write("keep me")
    else:
        args += ["--type", "q4"]
    r = subprocess.run([sys.executable, os.path.join(ROOT, "export_gguf.py"), *args], capture_output=True, text=True)
    assert r.returncode != 0 and expected in r.stderr and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]  # argparse prints its usage lines first
    assert len(errors) == 1 and expected in errors[0], r.stderr
    if case == "exists":
        assert open(out).read() == "keep me"


def test_llama_cpp_runs_the_file_with_our_tokens_and_our_greedy_continuations(tmp_path):
    """llama.cpp itself (llama-cpp-python, built from source by .ci/run): the same ids for the corpus, the same
    greedy tokens as our fp32 loop for plain and chat-templated prompts, in F32 and F16."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="optional: pip install llama-cpp-python (builds llama.cpp)")
    from generate import GenerationConfig, TextGenerator
    model, tok = make_run_dir(str(tmp_path / "run"), tie_embeddings=False)
    generator = TextGenerator(model, tok)
    prompts = [[tok.bos_id] + tok.encode(t) for t in ("the quick", "孙悟空", "lazy dog, 12")]
    prompts.append(tok.apply_chat_template([{"role": "user", "content": "the fox"}], add_generation_prompt=True)[0])
    with torch.no_grad():
        ours = [generator.generate_ids([p], GenerationConfig(max_new_tokens=12, greedy=True))[0] for p in prompts]
    ours = [new[:new.index(tok.eos_id) + 1] if tok.eos_id in new else new for new in ours]  # up to <|im_end|>
    for out_type in ("f32", "f16"):
        path = export(str(tmp_path / "run"), str(tmp_path / f"m-{out_type}.gguf"), out_type)
        llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_threads=1, verbose=False)
        for text in CORPUS:
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text), text
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text, allow_special=True), text
        assert llm.tokenize(b"the fox", add_bos=True) == [tok.bos_id] + tok.encode("the fox")
        for p, want in zip(prompts, ours):
            got = []
            for token in llm.generate(p, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
                got.append(int(token))
                if token == tok.eos_id or len(got) == len(want):
                    break
            assert got == want, (out_type, p, got, want)
        del llm


def test_llama_cpp_tokenizes_a_one_token_per_digit_vocabulary_as_we_do(tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="optional: pip install llama-cpp-python (builds llama.cpp)")
    make_run_dir(str(tmp_path / "run"))
    split = BPETokenizer.train(["What is 478 plus 356? 12 cats  7 dogs, 孙悟空 1998"] * 5, 317, verbose=False,
                               pattern=DIGITS_PATTERN)
    split.save(str(tmp_path / "run" / "tokenizer.json"))
    llm = llama_cpp.Llama(model_path=export(str(tmp_path / "run"), str(tmp_path / "m.gguf")), n_ctx=64, n_threads=1,
                          verbose=False)
    for text in CORPUS + ["What is 478 plus 356?", "a   7 b  12", "x12y 3.5", "\t42\n\n 7"]:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == split.encode(text), text
