"""
Export a run directory to a Hugging Face model folder, or import a Hugging Face Llama folder as a run directory.

    python export_hf.py --checkpoint checkpoints/sft_tiny --out hf_tiny          # -> LlamaForCausalLM / MixtralForCausalLM
    python export_hf.py --import-hf path/to/llama_folder --out checkpoints/imported

The mapping is exact, not approximate: MiniGPT uses Llama's weight layout and its rotate-half RoPE, so each
of our tensors is one HF tensor, or a fused one split in two (qkv -> q/k/v, gate_up -> gate/up).
Needs the optional packages safetensors (both directions) and transformers (only to load the result).
"""
import argparse
import json
import os

import torch

from common import cli, save_checkpoint, write_json
from model import MiniGPT, MiniGPTConfig, _read_run, load_model, load_weights
from tokenizer import BPETokenizer


def _require_safetensors():
    try:
        import safetensors.torch
        return safetensors.torch
    except ImportError:
        raise SystemExit("error: export_hf.py needs the safetensors package: pip install -r requirements-extras.txt")


def hf_config(cfg: MiniGPTConfig, tokenizer):
    moe = cfg.n_experts > 0
    d = {
        "architectures": ["MixtralForCausalLM" if moe else "LlamaForCausalLM"], "model_type": "mixtral" if moe else "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "intermediate_size": cfg.ffn_hidden,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim, "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "hidden_act": "silu", "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": False, "mlp_bias": False,
        "attention_dropout": 0.0, "initializer_range": 0.02, "torch_dtype": "float32",
        "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id,
    }
    if moe:
        d.update(num_local_experts=cfg.n_experts, num_experts_per_tok=cfg.experts_per_token,
                 router_aux_loss_coef=cfg.aux_loss_coef, output_router_logits=False, router_jitter_noise=0.0)
    return d


def to_hf_state_dict(model: MiniGPT):
    """Our tensor names -> Llama/Mixtral names; fused matrices are split along their output rows."""
    cfg, sd, out = model.config, model.state_dict(), {}
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    out["model.embed_tokens.weight"] = sd["embed.weight"]
    out["model.norm.weight"] = sd["norm.weight"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(cfg.n_layers):
        ours, hf = f"layers.{i}.", f"model.layers.{i}."
        out[hf + "input_layernorm.weight"] = sd[ours + "attn_norm.weight"]
        out[hf + "post_attention_layernorm.weight"] = sd[ours + "mlp_norm.weight"]
        wq, wk, wv = sd[ours + "attn.qkv.weight"].split([q, kv, kv], dim=0)
        out[hf + "self_attn.q_proj.weight"], out[hf + "self_attn.k_proj.weight"] = wq, wk
        out[hf + "self_attn.v_proj.weight"] = wv
        out[hf + "self_attn.o_proj.weight"] = sd[ours + "attn.proj.weight"]
        if cfg.n_experts:
            out[hf + "block_sparse_moe.gate.weight"] = sd[ours + "mlp.router.weight"]
            for e in range(cfg.n_experts):
                gate, up = sd[ours + f"mlp.experts.{e}.gate_up.weight"].chunk(2, dim=0)
                pre = hf + f"block_sparse_moe.experts.{e}."
                out[pre + "w1.weight"], out[pre + "w3.weight"] = gate, up
                out[pre + "w2.weight"] = sd[ours + f"mlp.experts.{e}.down.weight"]
        else:
            gate, up = sd[ours + "mlp.gate_up.weight"].chunk(2, dim=0)
            out[hf + "mlp.gate_proj.weight"], out[hf + "mlp.up_proj.weight"] = gate, up
            out[hf + "mlp.down_proj.weight"] = sd[ours + "mlp.down.weight"]
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}


def from_hf_state_dict(sd, cfg: MiniGPTConfig):
    """The inverse of to_hf_state_dict (dense Llama or Mixtral layout)."""
    out = {"embed.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"],
           "lm_head.weight": sd.get("lm_head.weight", sd["model.embed_tokens.weight"])}
    for i in range(cfg.n_layers):
        ours, hf = f"layers.{i}.", f"model.layers.{i}."
        out[ours + "attn_norm.weight"] = sd[hf + "input_layernorm.weight"]
        out[ours + "mlp_norm.weight"] = sd[hf + "post_attention_layernorm.weight"]
        out[ours + "attn.qkv.weight"] = torch.cat([sd[hf + f"self_attn.{n}_proj.weight"] for n in "qkv"], dim=0)
        out[ours + "attn.proj.weight"] = sd[hf + "self_attn.o_proj.weight"]
        if cfg.n_experts:
            out[ours + "mlp.router.weight"] = sd[hf + "block_sparse_moe.gate.weight"]
            for e in range(cfg.n_experts):
                pre = hf + f"block_sparse_moe.experts.{e}."
                out[ours + f"mlp.experts.{e}.gate_up.weight"] = torch.cat([sd[pre + "w1.weight"], sd[pre + "w3.weight"]], 0)
                out[ours + f"mlp.experts.{e}.down.weight"] = sd[pre + "w2.weight"]
        else:
            out[ours + "mlp.gate_up.weight"] = torch.cat([sd[hf + "mlp.gate_proj.weight"], sd[hf + "mlp.up_proj.weight"]], 0)
            out[ours + "mlp.down.weight"] = sd[hf + "mlp.down_proj.weight"]
    return out


def export(run_dir, out_dir, which="best"):
    st = _require_safetensors()
    model = load_model(run_dir, which=which)
    tokenizer = BPETokenizer.load(os.path.join(run_dir, "tokenizer.json"))
    os.makedirs(out_dir, exist_ok=True)
    cfg = model.config
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(cfg, tokenizer), f, indent=2)
    st.save_file(to_hf_state_dict(model), os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(os.path.join(out_dir, "tokenizer.json"), add_bos=True)  # encode("x") = <|im_start|> x, as in training
    special = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **special, "add_bos_token": True, "add_eos_token": False,
                   "model_max_length": cfg.max_seq_len, "chat_template": BPETokenizer.CHAT_TEMPLATE_JINJA,
                   "clean_up_tokenization_spaces": False}, f, indent=2, ensure_ascii=False)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}, f, indent=2)
    print(f"exported {model.checkpoint} -> {out_dir} (load with transformers.AutoModelForCausalLM.from_pretrained)")
    return out_dir


# our adapter names -> PEFT's module names on a Llama (q/k/v and gate/up have one adapter each, on their own rows)
PEFT_MODULES = {("attn.qkv", "q"): "self_attn.q_proj", ("attn.qkv", "k"): "self_attn.k_proj",
                ("attn.qkv", "v"): "self_attn.v_proj", ("attn.proj", "o"): "self_attn.o_proj",
                ("mlp.gate_up", "gate"): "mlp.gate_proj", ("mlp.gate_up", "up"): "mlp.up_proj",
                ("mlp.down", "down"): "mlp.down_proj"}


def lora_checkpoint(run_dir, which="best"):
    """(the adapters {name: tensor}, their settings) of a LoRA run directory, or a one-line error for another run."""
    _, ckpt, path = _read_run(run_dir, which)
    if not ckpt.get("lora"):
        raise ValueError(f"{path}: not a LoRA run (train one with --lora-rank); export it without --peft")
    return ckpt["model"], ckpt["lora"]


def export_peft_adapter(run_dir, out_dir, which="best", base_name=None):
    """A LoRA run's adapters in PEFT's layout (adapter_config.json, adapter_model.safetensors), for the base model
    exported with export(): peft.PeftModel.from_pretrained(that model, out_dir) then gives our merged model's logits."""
    st = _require_safetensors()
    adapters, lora = lora_checkpoint(run_dir, which)
    tensors = {}
    for name, tensor in adapters.items():  # layers.3.attn.qkv.lora_A.k -> ...layers.3.self_attn.k_proj.lora_A.weight
        layer, rest = name.split(".", 2)[1:]
        path, kind, target = rest.rsplit(".", 2)
        tensors[f"base_model.model.model.layers.{layer}.{PEFT_MODULES[(path, target)]}.{kind}.weight"] = \
            tensor.to(torch.float32).contiguous()
    os.makedirs(out_dir, exist_ok=True)
    st.save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora["rank"], "lora_alpha": lora["alpha"],
              "lora_dropout": lora["dropout"],
              "target_modules": sorted({module.split(".")[1] for (_, target), module in PEFT_MODULES.items()
                                        if target in lora["targets"]}),
              "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "use_rslora": False, "use_dora": False,
              "init_lora_weights": True, "modules_to_save": None,
              "base_model_name_or_path": base_name or (lora.get("base") or {}).get("run_dir")}
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {len(tensors)} adapter tensors of {run_dir} to {out_dir} (peft.PeftModel.from_pretrained on the "
          f"exported base model loads them)")
    return out_dir


def merge_lora_run(run_dir, out_dir, which="best"):
    """A standalone run directory with a LoRA run's adapters merged into its base: it needs the base no longer."""
    _, ckpt, path = _read_run(run_dir, which)
    if not ckpt.get("lora"):
        raise ValueError(f"{path}: not a LoRA run; it needs no merging")
    model = load_model(run_dir, which=which)  # base + adapters, merged
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    BPETokenizer.load(os.path.join(run_dir, "tokenizer.json")).save(os.path.join(out_dir, "tokenizer.json"))
    write_json(os.path.join(out_dir, "config.json"), {**config, "merged_from": {"run_dir": run_dir, "lora": ckpt["lora"]}})
    save_checkpoint(os.path.join(out_dir, "ckpt_best.pt"), {"model": model.state_dict(), "step": ckpt.get("step"),
                                                            "model_config": model.config.to_dict()})
    print(f"merged {model.checkpoint} into {out_dir}/ckpt_best.pt")
    return out_dir


def import_hf(hf_dir, out_dir):
    """A Hugging Face Llama/Mixtral folder (config.json + model.safetensors, byte-level BPE tokenizer.json) as a run directory."""
    model, tokenizer = read_hf_folder(hf_dir)  # every check before out_dir is made
    cfg = model.config
    os.makedirs(out_dir, exist_ok=True)
    tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
    write_json(os.path.join(out_dir, "config.json"), {"stage": "import_hf", "args": {"source": hf_dir}, "model": cfg.to_dict()})
    save_checkpoint(os.path.join(out_dir, "ckpt_best.pt"), {"model": model.state_dict(), "model_config": cfg.to_dict(), "step": 0})
    return out_dir


def read_hf_folder(hf_dir):
    """(MiniGPT in eval mode, BPETokenizer) from a Hugging Face Llama/Mixtral folder, checked field by field."""
    st = _require_safetensors()
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found (expected a Hugging Face model folder)")
    try:
        with open(path) as f:
            c = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if c.get("model_type") not in ("llama", "mixtral"):
        raise ValueError(f"{path}: model_type is {c.get('model_type')!r}; only llama and mixtral are supported")
    for key in ("attention_bias", "mlp_bias"):
        if c.get(key):
            raise ValueError(f"{path}: {key}=true is not supported (MiniGPT has no biases)")
    rope = c.get("rope_parameters") or {}
    if (c.get("rope_scaling") or {}).get("rope_type", "default") != "default" or rope.get("rope_type", "default") != "default":
        raise ValueError(f"{path}: RoPE scaling is not supported")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size") if k not in c]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    cfg = MiniGPTConfig(vocab_size=c["vocab_size"], dim=c["hidden_size"], n_layers=c["num_hidden_layers"],
                        n_heads=c["num_attention_heads"], n_kv_heads=c.get("num_key_value_heads", c["num_attention_heads"]),
                        ffn_hidden=c["intermediate_size"], max_seq_len=c.get("max_position_embeddings", 2048),
                        rope_theta=rope.get("rope_theta", c.get("rope_theta", 10000.0)), norm_eps=c.get("rms_norm_eps", 1e-6),
                        tie_embeddings=c.get("tie_word_embeddings", False), n_experts=c.get("num_local_experts", 0),
                        experts_per_token=c.get("num_experts_per_tok", 2))
    if c.get("head_dim", cfg.head_dim) != cfg.head_dim:
        raise ValueError(f"{path}: head_dim {c['head_dim']} != hidden_size / num_attention_heads")
    weights = os.path.join(hf_dir, "model.safetensors")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: not found (only single-file safetensors checkpoints are supported)")
    tokenizer = BPETokenizer.load(os.path.join(hf_dir, "tokenizer.json"))
    try:
        tensors = st.load_file(weights)
    except Exception as e:  # safetensors raises its own SafetensorError for a damaged or cut-short file
        raise ValueError(f"{weights}: not a readable safetensors file ({e})") from None
    try:
        state_dict = from_hf_state_dict(tensors, cfg)
    except KeyError as e:
        raise ValueError(f"{weights}: no tensor {e} (config.json describes more than the file holds)") from None
    model = MiniGPT(cfg)
    load_weights(model, state_dict, source=weights)
    unused = sorted(set(tensors) - set(to_hf_state_dict(model)) - {"lm_head.weight"})  # a tied head may be saved too
    unused = [k for k in unused if not k.endswith("rotary_emb.inv_freq")]  # a buffer older exports wrote; we recompute it
    if unused:
        raise ValueError(f"{weights}: {len(unused)} tensor(s) config.json has no place for, e.g. {unused[0]}")
    model.checkpoint = weights
    return model.eval(), tokenizer


def main():
    p = argparse.ArgumentParser(description="Export to / import from a Hugging Face model folder.")
    p.add_argument("--checkpoint", help="run directory to export")
    p.add_argument("--import-hf", help="Hugging Face Llama/Mixtral folder to import")
    p.add_argument("--merge-lora", help="a LoRA run directory to merge into a standalone run directory at --out")
    p.add_argument("--peft", action="store_true", help="with --checkpoint of a LoRA run: write its adapters in PEFT's "
                   "layout (for the base model exported on its own) instead of the merged model")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--which", default="best", choices=["best", "latest"],
                   help="export ckpt_best.pt (the best eval after training began) or ckpt_latest.pt (the last save)")
    args = p.parse_args()
    if sum(map(bool, (args.checkpoint, args.import_hf, args.merge_lora))) != 1:
        p.error("give exactly one of --checkpoint, --import-hf or --merge-lora")
    if args.merge_lora:
        merge_lora_run(args.merge_lora, args.out, args.which)
    elif args.checkpoint and args.peft:
        export_peft_adapter(args.checkpoint, args.out, args.which)
    elif args.checkpoint:
        export(args.checkpoint, args.out, args.which)
    else:
        import_hf(args.import_hf, args.out)
        print(f"imported {args.import_hf} -> {args.out} (a run directory: generate.py --checkpoint {args.out})")


if __name__ == "__main__":
    cli(main)
