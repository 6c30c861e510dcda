#!/usr/bin/python3
"""gen_llama_lm.py: a small random LLaMA and its float64 logits, for lavinia's decoder tests.

Run with Debian's interpreter (torch 1.13, numpy), from this directory:

    cd tests/reference && /usr/bin/python3 gen_llama_lm.py

It writes three Hugging Face directories, llama-lm-f32/, llama-lm-f16/ and llama-lm-bf16/
(config.json and model.safetensors; the same random weights stored as F32, F16 and BF16), and
llama_lm.bin (the LVREF layout of tests/refdata.h) with the prompt ids ("tokens") and the
logits that each directory's weights give, computed in float64 from the stored (rounded)
values: "logits.f32", "logits.f16", "logits.bf16", each (T, V). All are committed, so
`make check` needs no Python.

The model is LlamaForCausalLM as transformers computes it: vocab 96, hidden 48, intermediate
80, 2 layers, 6 heads, 2 kv heads (GQA: query head h reads kv head h // 3, repeat_kv), head
dim 8, an untied lm_head, RMSNorm eps 1e-5, RoPE theta 10000 in the half-split layout
(rotate_half), causal attention, SwiGLU MLP. The prompt is 12 ids.
"""

import json
import os
import struct

import numpy as np
import torch

MAGIC = b"LVREF\0\0\0"
VERSION = 1
SEED = 20261126
HERE = os.path.dirname(os.path.abspath(__file__))
V, C, F, L, H, KV, D, T = 96, 48, 80, 2, 6, 2, 8, 12
EPS, THETA = 1e-5, 10000.0


def make_weights(rs):
    def lin(out, inp):
        return rs.standard_normal((out, inp)) / np.sqrt(inp)

    w = {"model.embed_tokens.weight": rs.standard_normal((V, C)),
         "model.norm.weight": 1 + 0.2 * rs.standard_normal(C),
         "lm_head.weight": lin(V, C)}
    for l in range(L):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = 1 + 0.2 * rs.standard_normal(C)
        w[p + "self_attn.q_proj.weight"] = lin(H * D, C)
        w[p + "self_attn.k_proj.weight"] = lin(KV * D, C)
        w[p + "self_attn.v_proj.weight"] = lin(KV * D, C)
        w[p + "self_attn.o_proj.weight"] = lin(C, H * D)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.2 * rs.standard_normal(C)
        w[p + "mlp.gate_proj.weight"] = lin(F, C)
        w[p + "mlp.up_proj.weight"] = lin(F, C)
        w[p + "mlp.down_proj.weight"] = lin(C, F)
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in w.items()}


def rms(x, w):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + EPS) * w


def rotate_half(x):
    return torch.cat((-x[..., D // 2:], x[..., :D // 2]), -1)


def forward(w, ids):
    w = {k: v.double() for k, v in w.items()}
    pos = torch.arange(len(ids), dtype=torch.float64)
    inv = 1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.cat((pos[:, None] * inv, pos[:, None] * inv), -1)  # (T, D)
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    x = w["model.embed_tokens.weight"][ids]
    mask = torch.full((len(ids), len(ids)), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(L):
        p = "model.layers.%d." % l
        n = rms(x, w[p + "input_layernorm.weight"])
        q = (n @ w[p + "self_attn.q_proj.weight"].T).view(-1, H, D)
        k = (n @ w[p + "self_attn.k_proj.weight"].T).view(-1, KV, D)
        v = (n @ w[p + "self_attn.v_proj.weight"].T).view(-1, KV, D)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        s = torch.einsum("thd,shd->hts", q, k) / np.sqrt(D) + mask
        a = torch.einsum("hts,shd->thd", s.softmax(-1), v).reshape(-1, H * D)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        m = rms(x, w[p + "post_attention_layernorm.weight"])
        g = m @ w[p + "mlp.gate_proj.weight"].T
        u = m @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


def raw(t, dtype):
    if dtype == "F32":
        return t.numpy().astype("<f4").tobytes()
    if dtype == "F16":
        return t.half().numpy().astype("<f2").tobytes()
    return t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()


def write_safetensors(path, weights, dtype):
    header, blobs, off = {}, [], 0
    for name in sorted(weights):
        b = raw(weights[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(weights[name].shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_dir(name, weights, dtype):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V,
              "hidden_size": C, "intermediate_size": F, "num_hidden_layers": L,
              "num_attention_heads": H, "num_key_value_heads": KV,
              "max_position_embeddings": 64, "rms_norm_eps": EPS, "rope_theta": THETA,
              "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              "hidden_act": "silu", "torch_dtype": {"F32": "float32", "F16": "float16",
                                                    "BF16": "bfloat16"}[dtype]}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(d, "model.safetensors"), weights, dtype)


def rounded(weights, dtype):
    t = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    return {k: v.to(t).to(torch.float32) for k, v in weights.items()}


def write_ref(path, tensors):
    with open(path + ".tmp", "wb") as f:
        f.write(MAGIC + struct.pack("<II", VERSION, len(tensors)))
        for name, a in tensors:
            a = np.ascontiguousarray(np.asarray(a, dtype="<f8"))
            nb = name.encode("ascii")
            f.write(struct.pack("<I", len(nb)) + nb)
            f.write(struct.pack("<I", a.ndim) + struct.pack("<%dI" % a.ndim, *a.shape))
            f.write(a.tobytes())
    os.replace(path + ".tmp", path)


def main():
    rs = np.random.RandomState(SEED)
    weights = make_weights(rs)
    ids = torch.tensor(rs.randint(0, V, size=T), dtype=torch.long)
    out = [("tokens", ids.double().numpy())]
    for dtype in ("F32", "F16", "BF16"):
        w = rounded(weights, dtype)
        write_dir("llama-lm-" + dtype.lower(), w, dtype)
        out.append(("logits." + dtype.lower(), forward(w, ids).numpy()))
    write_ref(os.path.join(HERE, "llama_lm.bin"), out)
    print("wrote llama-lm-{f32,f16,bf16}/ and llama_lm.bin; tokens", ids.tolist())


if __name__ == "__main__":
    main()
