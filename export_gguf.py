"""
Export a run directory to one GGUF file, the format llama.cpp, ollama and LM Studio read, with an ollama Modelfile
beside it.

    python export_gguf.py --checkpoint checkpoints/sft_tiny --out sft_tiny.gguf                  # F32
    python export_gguf.py --checkpoint checkpoints/sft_tiny --out sft_tiny-q8_0.gguf --type q8_0  # 8-bit, ~1/4 size
    llama-cli -m sft_tiny.gguf -p "Once upon a time" -n 40 --temp 0                               # llama.cpp
    ollama create mini -f Modelfile && ollama run mini                                            # ollama

The file holds llama.cpp's "llama" architecture: its tensor names, Q and K rows reordered for its rotary layout
(we rotate halves, as Hugging Face; llama.cpp rotates adjacent pairs), our byte-level BPE as a "gpt2" vocabulary
with its merges, the special tokens as control tokens, and our chat template. Needs the optional gguf package.
"""
import argparse
import os
import unicodedata

import numpy as np

from common import cli
from export_hf import to_hf_state_dict
from model import load_model
from tokenizer import BYTE_TO_CHAR, DIGITS_PATTERN, GPT2_PATTERN, BPETokenizer

TYPES = ("f32", "f16", "bf16", "q8_0")


def _require_gguf():
    try:
        import gguf
        return gguf
    except ImportError:
        raise SystemExit("error: export_gguf.py needs the gguf package: pip install -r requirements-extras.txt")


def rotary_rows(w, n_heads):
    """Q or K rows from rotate-half order (each head: its first half, then its second) to llama.cpp's, where
    rotated pairs are adjacent rows: row i of the first half and row i of the second half become rows 2i and 2i+1.
    llama.cpp's convert_hf_to_gguf.py does the same to Hugging Face Llama weights."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


# Hugging Face Llama names (export_hf.to_hf_state_dict, which splits our fused qkv and gate_up) -> llama.cpp's
GGUF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight", "input_layernorm.weight": "attn_norm.weight",
              "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
              "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
              "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
              "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"}


def gguf_tensors(model):
    """(llama.cpp name, float32 array) for every weight (out x in), from the Hugging Face layout export_hf.py writes:
    model.layers.N.<name> becomes blk.N.<llama.cpp name>, and Q and K rows are reordered for llama.cpp's rotary layout.
    A tied lm_head is left out (export_hf leaves it out too): llama.cpp reuses token_embd for the output, as we do."""
    cfg, out = model.config, []
    for name, t in to_hf_state_dict(model).items():
        if name.startswith("model.layers."):
            layer, rest = name[len("model.layers."):].split(".", 1)
            name = f"blk.{layer}.{GGUF_NAMES[rest]}"
        else:
            name = GGUF_NAMES[name]
        if name.endswith("attn_q.weight") or name.endswith("attn_k.weight"):
            t = rotary_rows(t, cfg.n_heads if name.endswith("attn_q.weight") else cfg.n_kv_heads)
        out.append((name, t.contiguous().numpy()))
    return out


def vocabulary(tokenizer, vocab_size, gguf):
    """(tokens, token types, merges) as GGUF's gpt2 model stores them: each token's bytes in GPT-2's byte-to-unicode
    alphabet (what tokenizer.json holds), specials as control tokens, ids the model has beyond the tokenizer unused."""
    tokens, types = [], []
    for i in range(vocab_size):
        if i in tokenizer.id_to_special:
            tokens.append(tokenizer.id_to_special[i])
            types.append(gguf.TokenType.CONTROL)
        elif i in tokenizer.vocab_bytes:
            tokens.append("".join(BYTE_TO_CHAR[b] for b in tokenizer.vocab_bytes[i]))
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [" ".join(tokens[t] for t in pair) for pair, _ in tokenizer.merges]
    return tokens, types, merges


def gpt2_split_gives_our_ids(tokenizer):
    """Whether llama.cpp's 'gpt-2' pre-tokenizer gives our ids. Our default pattern is GPT-2's. The one-token-per-digit
    pattern differs only in cutting digits apart (and a space before a digit off them); a tokenizer trained with it has
    no token that joins a digit to anything, so BPE cuts GPT-2's ' 784' into ' ', '7', '8', '4' as we do (checked in
    llama.cpp on 1,108 texts: stories, traces, random runs of digits, spaces and letters)."""
    if tokenizer.pattern == GPT2_PATTERN:
        return True
    def joins_a_number(piece):  # a token that holds a numeric character (\p{N}) and anything more
        text = piece.decode("utf-8", errors="ignore")
        return any(unicodedata.category(c).startswith("N") and len(c.encode()) < len(piece) for c in text)
    return tokenizer.pattern == DIGITS_PATTERN and not any(map(joins_a_number, tokenizer.vocab_bytes.values()))


def modelfile(gguf_name):
    """An ollama Modelfile for the .gguf: ollama's Go template renders the same ChatML turns as our chat template
    (<|im_start|>role, newline, content, <|im_end|>, newline; then the assistant's header), and generation stops at
    <|im_end|>."""
    return (f"FROM ./{gguf_name}\n"
            'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
            '<|im_start|>assistant\n"""\n'
            'PARAMETER stop "<|im_end|>"\nPARAMETER stop "<|im_start|>"\nPARAMETER stop "<|endoftext|>"\n')


def export(run_dir, out_path, out_type="f32", which="best", overwrite=False):
    if out_type not in TYPES:
        raise ValueError(f"--type {out_type!r}: one of {', '.join(TYPES)}")
    if os.path.exists(out_path) and not overwrite:
        raise ValueError(f"{out_path} exists; pass --overwrite to replace it")
    gguf = _require_gguf()
    model = load_model(run_dir, which=which)
    cfg = model.config
    tokenizer = BPETokenizer.load(os.path.join(run_dir, "tokenizer.json"))
    if cfg.n_experts:
        raise ValueError(f"{run_dir}: a mixture-of-experts model; its GGUF (Mixtral's layout) is not verified against "
                         "llama.cpp here, so it is refused: export_hf.py writes it for transformers")
    if not gpt2_split_gives_our_ids(tokenizer):
        raise ValueError(f"{run_dir}: the tokenizer splits with its own pattern, which no llama.cpp pre-tokenizer is "
                         "known to reproduce exactly; refused rather than tokenized differently (the default pattern "
                         "and --tokenizer-digits split export as 'gpt-2')")
    if tokenizer.ignore_merges:
        raise ValueError(f"{run_dir}: the tokenizer ignores merges for whole words (Llama 3's rule), which llama.cpp's "
                         "gpt-2 pre-tokenizer does not do; refused rather than tokenized differently")
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[out_type]
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[out_type]

    tmp = out_path + ".tmp"  # written beside, then renamed: a crash never leaves half a .gguf under the real name
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_name(os.path.basename(os.path.abspath(run_dir)))
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.dim)
    writer.add_feed_forward_length(cfg.ffn_hidden)
    writer.add_block_count(cfg.n_layers)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(file_type)
    tokens, types, merges = vocabulary(tokenizer, cfg.vocab_size, gguf)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # GPT-2's split regex gives our ids (checked above)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_pad_token_id(tokenizer.pad_id)
    writer.add_add_bos_token(True)  # every training document began with <|im_start|>: a plain prompt gets it too
    writer.add_add_eos_token(False)
    writer.add_chat_template(BPETokenizer.CHAT_TEMPLATE_JINJA)
    for name, array in gguf_tensors(model):
        if array.ndim == 1 or out_type == "f32":  # norms stay F32, as llama.cpp's converter keeps them
            writer.add_tensor(name, array.astype(np.float32))
        elif out_type == "f16":
            writer.add_tensor(name, array.astype(np.float16))
        elif out_type == "q8_0" and array.shape[-1] % 32:  # Q8_0 blocks are 32 values of a row: F16 otherwise
            writer.add_tensor(name, array.astype(np.float16))
        else:  # bf16 and q8_0: the gguf package converts in numpy (q8_0: per 32 values, a scale and 32 int8)
            writer.add_tensor(name, gguf.quants.quantize(array.astype(np.float32), qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out_path)
    modelfile_path = os.path.join(os.path.dirname(os.path.abspath(out_path)), "Modelfile")
    with open(modelfile_path, "w", encoding="utf-8") as f:
        f.write(modelfile(os.path.basename(out_path)))
    size = os.path.getsize(out_path) / 2 ** 20
    print(f"exported {model.checkpoint} -> {out_path} ({out_type}, {size:.1f} MiB) and {modelfile_path}")
    return out_path


def main():
    p = argparse.ArgumentParser(description="Export a run directory to a GGUF file (llama.cpp, ollama, LM Studio).")
    p.add_argument("--checkpoint", required=True, help="run directory to export")
    p.add_argument("--out", required=True, help="the .gguf file to write (an ollama Modelfile goes beside it)")
    p.add_argument("--type", default="f32", choices=TYPES, help="weight type: f32 (exact), f16, bf16, q8_0 (8-bit blocks)")
    p.add_argument("--which", default="best", choices=["best", "latest"], help="ckpt_best.pt or ckpt_latest.pt")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args()
    export(args.checkpoint, args.out, args.type, args.which, args.overwrite)


if __name__ == "__main__":
    cli(main)
