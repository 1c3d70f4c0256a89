"""Exported models load in transformers and agree with ours to float tolerance (skipped without the extras)."""
import os

import pytest
import torch

import builtin_data
from export_hf import export, import_hf
from generate import GenerationConfig, TextGenerator, load_generator
from model import MiniGPT, MiniGPTConfig, load_model
from tokenizer import BPETokenizer
from tools import CALCULATOR_TOOL
from train_utils import save_checkpoint, write_json

transformers = pytest.importorskip("transformers", reason="optional: pip install -r requirements-extras.txt")
pytest.importorskip("safetensors", reason="optional: pip install -r requirements-extras.txt")


def make_run_dir(path, **kw):
    torch.manual_seed(0)
    tok = BPETokenizer.train(["the quick brown fox jumps over the lazy dog, 孙悟空大闹天宫"] * 5, 320, verbose=False)
    cfg = MiniGPTConfig(**{**dict(vocab_size=tok.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                   max_seq_len=64, rope_theta=500.0), **kw})
    model = MiniGPT(cfg)
    with torch.no_grad():  # non-trivial norm weights, so a swapped mapping would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    write_json(os.path.join(path, "config.json"), {"stage": "test", "model": cfg.to_dict()})
    save_checkpoint(os.path.join(path, "ckpt_best.pt"), {"model": model.state_dict(), "model_config": cfg.to_dict()})
    return model.eval(), tok


@pytest.mark.parametrize("kw,arch", [(dict(), "LlamaForCausalLM"), (dict(tie_embeddings=False), "LlamaForCausalLM"),
                                     (dict(n_experts=4, experts_per_token=2), "MixtralForCausalLM")],
                         ids=["llama", "llama-untied", "mixtral"])
def test_exported_model_matches_ours_in_logits_and_greedy_tokens(tmp_path, kw, arch):
    model, tok = make_run_dir(str(tmp_path / "run"), **kw)
    hf_dir = export(str(tmp_path / "run"), str(tmp_path / "hf"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    assert type(hf).__name__ == arch
    ids = torch.tensor([[1] + tok.encode("the quick brown fox 孙悟空")])
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, model(ids).logits, atol=1e-4)
        hf.generation_config.eos_token_id = None  # compare a fixed number of tokens
        hf_tokens = hf.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, ids.shape[1]:].tolist()
    ours = TextGenerator(model, tok).generate_ids([ids[0].tolist()], GenerationConfig(max_new_tokens=12, greedy=True, stop_on_eos=False))[0]
    assert hf_tokens == ours


TOOL_CONVERSATIONS = [  # (messages, tools, add_generation_prompt, enable_thinking)
    (builtin_data.arithmetic_conversation(builtin_data.arithmetic_items(n=1)[0], "tool"), [CALCULATOR_TOOL], False, True),
    (builtin_data.arithmetic_conversation(builtin_data.arithmetic_items(n=1)[0], "tool")[:3], [CALCULATOR_TOOL], True, True),
    (builtin_data.arithmetic_conversation(builtin_data.arithmetic_items(n=2)[1], "think"), None, False, True),
    ([{"role": "user", "content": "12加5等于多少？"}], None, True, False),  # thinking off: an empty think block
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Add 2 and 3, then 4 and 5."},
      {"role": "assistant", "content": "Two calls:", "reasoning_content": "Two sums.", "tool_calls": [
          {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "2 + 3"}}},
          {"type": "function", "function": {"name": "calculator", "arguments": '{"expression": "4 + 5"}'}}]},
      {"role": "tool", "tool_call_id": "a", "content": "5"}, {"role": "tool", "tool_call_id": "b", "content": "9"},
      {"role": "assistant", "content": "5 and 9, 孙悟空."}], [CALCULATOR_TOOL, {"type": "function", "function": {
          "name": "lookup", "description": "查词", "parameters": {"type": "object", "properties": {}}}}], True, True),
]


@pytest.mark.parametrize("messages, tools, add_generation_prompt, enable_thinking", TOOL_CONVERSATIONS)
def test_exported_chat_template_renders_tools_calls_results_and_reasoning_to_our_ids(
        tmp_path, messages, tools, add_generation_prompt, enable_thinking):
    _, tok = make_run_dir(str(tmp_path / "run"))
    hf_tok = transformers.AutoTokenizer.from_pretrained(export(str(tmp_path / "run"), str(tmp_path / "hf")))
    rendered = hf_tok.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                          enable_thinking=enable_thinking, tokenize=False)
    ours = tok.apply_chat_template(messages, add_generation_prompt, tools=tools, enable_thinking=enable_thinking)[0]
    assert rendered == tok.decode(ours)
    assert hf_tok(rendered, add_special_tokens=False)["input_ids"] == ours  # token for token


def test_exported_tokenizer_loads_in_autotokenizer_with_chat_template(tmp_path):
    _, tok = make_run_dir(str(tmp_path / "run"))
    hf_dir = export(str(tmp_path / "run"), str(tmp_path / "hf"))
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    # plain text gets <|im_start|> first, as every training document had it; chat text has its own and gets no second
    assert hf_tok("the quick fox")["input_ids"] == [tok.bos_id] + tok.encode("the quick fox")
    assert hf_tok("the quick fox", add_special_tokens=False)["input_ids"] == tok.encode("the quick fox")
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rendered = hf_tok.apply_chat_template(msgs, tokenize=False)
    assert rendered == tok.decode(tok.apply_chat_template(msgs)[0])
    assert list(hf_tok.apply_chat_template(msgs, return_dict=True)["input_ids"]) == tok.apply_chat_template(msgs)[0]


@pytest.fixture(scope="module")
def exported_pretrain(stage_dirs, tmp_path_factory):
    """The shared chain's pretrained model, exported once: (hf model, hf tokenizer, our generator)."""
    hf_dir = export(stage_dirs["pretrain"], str(tmp_path_factory.mktemp("hf")))
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    return hf, transformers.AutoTokenizer.from_pretrained(hf_dir), load_generator(stage_dirs["pretrain"])


@pytest.mark.parametrize("prompt", ["Once upon a time", "Once upon a time ", "Mira lives in", "7 plus 5 is ", "米拉住在"])
def test_transformers_continues_a_plain_prompt_as_generate_py_does(exported_pretrain, prompt):
    """AutoTokenizer(prompt) + model.generate gives generate.py's greedy text, trailing space or not: both start the
    prompt with <|im_start|> as training did (without it the continuations differed)."""
    hf, hf_tok, ours = exported_pretrain
    inputs = hf_tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=24, do_sample=False)
    theirs = hf_tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert theirs == ours.generate(prompt, GenerationConfig(max_new_tokens=24, greedy=True))


def test_import_hf_round_trips_to_identical_weights(tmp_path):
    model, _ = make_run_dir(str(tmp_path / "run"))
    export(str(tmp_path / "run"), str(tmp_path / "hf"))
    import_hf(str(tmp_path / "hf"), str(tmp_path / "back"))
    back = load_model(str(tmp_path / "back"))
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


def test_import_hf_names_a_broken_config(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "llama", "hidden_size": 64}')
    with pytest.raises(ValueError, match="config.json: missing field.s. vocab_size, num_hidden_layers"):
        import_hf(str(hf), str(tmp_path / "back"))  # was a bare KeyError: 'vocab_size'
    (hf / "config.json").write_text('{"model_type": ')
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        import_hf(str(hf), str(tmp_path / "back"))


@pytest.mark.parametrize("damage,message", [
    ("cut", r"model.safetensors: not a readable safetensors file"),  # was SafetensorError's traceback
    ("more_layers", r"model.safetensors: no tensor 'model.layers.2.input_layernorm.weight'"),  # was a KeyError
    ("fewer_layers", r"model.safetensors: 9 tensor\(s\) config.json has no place for"),  # was imported silently
    ("wider_mlp", r"model.safetensors: weights do not fit the model \(4 shapes differ"),  # was a shape dump
    ("no_tokenizer", r"tokenizer.json: tokenizer file not found"),
])
def test_import_hf_names_a_damaged_folder_and_writes_nothing(tmp_path, damage, message):
    import json
    make_run_dir(str(tmp_path / "run"))
    hf = export(str(tmp_path / "run"), str(tmp_path / "hf"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    if damage == "cut":
        weights = tmp_path / "hf" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "no_tokenizer":
        (tmp_path / "hf" / "tokenizer.json").unlink()
    else:
        field, change = {"more_layers": ("num_hidden_layers", 1), "fewer_layers": ("num_hidden_layers", -1),
                         "wider_mlp": ("intermediate_size", 8)}[damage]
        config[field] += change
        (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises((ValueError, OSError), match=message):  # both end in one line through tu.cli
        import_hf(hf, str(tmp_path / "back"))
    assert not (tmp_path / "back").exists()  # every check comes before the run directory is made


def test_export_which_latest_exports_the_last_save(tmp_path, capsys):
    model, _ = make_run_dir(str(tmp_path / "run"))
    later = {k: v * 2 for k, v in model.state_dict().items()}
    save_checkpoint(str(tmp_path / "run" / "ckpt_latest.pt"), {"model": later, "model_config": model.config.to_dict(), "step": 9})
    hf_dir = export(str(tmp_path / "run"), str(tmp_path / "hf"), which="latest")
    assert f"exported {tmp_path / 'run' / 'ckpt_latest.pt'} (step 9) -> {hf_dir}" in capsys.readouterr().out
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    assert torch.equal(hf.model.embed_tokens.weight, later["embed.weight"])
