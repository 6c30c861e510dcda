#!/usr/bin/python3
"""gen_quant.py: a random 2-layer LM whose matrices quantise to Q8_0, Q4_0 and NF4, and the
logits of the model with each set of dequantised weights, in float64.

Run with Debian's interpreter after gen_llama_lm.py and gen_nf4.py, from this directory:

    cd tests/reference && /usr/bin/python3 gen_quant.py

The quantisers follow ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref (float32
arithmetic, the scale stored as float16) and gen_nf4.py's NF4. As lavinia's --quant does,
every projection and the output head is quantised (Q8_0/Q4_0: rows of whole 32-value blocks;
NF4: whole 64-value blocks), the embedding and the norms stay float32.

quant-lm/: config.json and model.safetensors (F32): vocab 96, hidden 64, FFN 128, 2 layers,
4 heads, 2 kv heads, untied head.

quant.bin (LVREF):
  "ids"                 (12,)
  "logits.f32"          (12, 96)
  "logits.q8_0" / "logits.q4_0" / "logits.nf4"   (12, 96)  with the dequantised weights
  "wq0.q8_0" / "wq0.q4_0" (64, 64)  layer 0's q projection after the round trip (bit for bit)
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_llama_lm as lm  # noqa: E402
import gen_nf4  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261201


def q8_0(w):
    x = w.astype(np.float32).reshape(-1, 32)
    amax = np.max(np.abs(x), axis=1)
    d = (amax / np.float32(127.0)).astype(np.float32)
    idv = np.where(d != 0, np.float32(1.0) / np.where(d != 0, d, 1), 0).astype(np.float32)
    v = (x * idv[:, None]).astype(np.float32)
    q = np.sign(v) * np.floor(np.abs(v.astype(np.float64)) + 0.5)        # roundf
    dh = d.astype(np.float16).astype(np.float32)
    return (dh[:, None] * q.astype(np.float32)).astype(np.float32).reshape(w.shape)


def q4_0(w):
    x = w.astype(np.float32).reshape(-1, 32)
    idx = np.argmax(np.abs(x), axis=1)                  # the first of equal magnitudes
    mx = x[np.arange(x.shape[0]), idx]
    d = (mx / np.float32(-8.0)).astype(np.float32)
    idv = np.where(d != 0, np.float32(1.0) / np.where(d != 0, d, 1), 0).astype(np.float32)
    v = ((x * idv[:, None]).astype(np.float32) + np.float32(8.5)).astype(np.float32)
    q = np.minimum(np.trunc(v), 15)
    dh = d.astype(np.float16).astype(np.float32)
    return ((q.astype(np.float32) - np.float32(8.0)) * dh[:, None]).astype(np.float32).reshape(w.shape)


def main():
    dims = dict(V=96, C=64, F=128, L=2, H=4, KV=2, D=16)
    saved = {k: getattr(lm, k) for k in dims}
    for k, v in dims.items():
        setattr(lm, k, v)
    rs = np.random.RandomState(SEED)
    w = lm.make_weights(rs)
    ids = [1, 5, 17, 33, 40, 8, 91, 2, 64, 13, 27, 55]
    tensors = [("ids", np.array(ids, dtype=np.float64)),
               ("logits.f32", lm.forward(w, torch.tensor(ids)).numpy())]
    for name, fn, block in (("q8_0", q8_0, 32), ("q4_0", q4_0, 32),
                            ("nf4", gen_nf4.nf4_roundtrip, 64)):
        q = {}
        for k, v in w.items():
            is_mat = (k.startswith("model.layers.") and k.endswith("_proj.weight")) or \
                k == "lm_head.weight"
            whole = v.numel() % 64 == 0 if name == "nf4" else v.shape[-1] % 32 == 0
            q[k] = torch.tensor(fn(v.numpy()), dtype=torch.float64) if is_mat and whole else v
        tensors.append(("logits." + name, lm.forward(q, torch.tensor(ids)).numpy()))
        if name != "nf4":
            tensors.append(("wq0." + name, q["model.layers.0.self_attn.q_proj.weight"].numpy()))
    lm.write_dir("quant-lm", w, "F32")
    lm.write_ref(os.path.join(HERE, "quant.bin"), tensors)
    for k, v in saved.items():
        setattr(lm, k, v)
    print("wrote quant-lm/ and quant.bin")


if __name__ == "__main__":
    main()
