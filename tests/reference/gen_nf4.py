#!/usr/bin/python3
"""gen_nf4.py: NF4 quantisation (QLoRA's double-quantised 4-bit NormalFloat) of the reference
LM's weights, and the logits of the model that uses the dequantised weights, in float64.

Run with Debian's interpreter after gen_llama_lm.py, from this directory:

    cd tests/reference && /usr/bin/python3 gen_nf4.py

The quantisation follows include/lavinia/tensor.h step by step: blocks of 64 values of the
flattened matrix, each value the nearest of the 16 NF4 values (ties: the lower) times the
block's absmax; the absmaxes less their mean, as the nearest of the 256 values of
bitsandbytes' signed dynamic map times the largest in each group of 256 blocks. Arithmetic in
float64, rounded to float32 where a value is stored, so lavinia's choices are the same to the
bit. Quantised: every projection of both layers and the untied output head (lavinia's
--quant nf4); the embedding and the norms stay float32.

nf4.bin (LVREF, tests/refdata.h):
  "ids"        (12,)     a prompt
  "wq0"        (48, 48)  layer 0's q projection after the round trip (compared bit for bit)
  "logits"     (12, 96)  the logits of the prompt with every quantised weight dequantised
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_llama_lm as lm  # noqa: E402
import gen_lora as gl  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=np.float32)


def dynamic_map():
    v = []
    for i in range(7):
        items = 2 ** i + 1
        for k in range(items - 1):
            b0 = 0.1 + 0.9 * k / (items - 1)
            b1 = 0.1 + 0.9 * (k + 1) / (items - 1)
            mean, e = (b0 + b1) / 2.0, 10.0 ** (-6 + i)
            v += [e * mean, -e * mean]
    v += [0.0, 1.0]
    return np.array(sorted(v), dtype=np.float32)


def nearest(table, x):
    return int(np.argmin(np.abs(x - table.astype(np.float64))))


def nf4_roundtrip(w):
    x = w.astype(np.float32).reshape(-1)
    nb = x.size // 64
    dmap = dynamic_map()
    absmax = np.array([np.max(np.abs(x[b * 64:(b + 1) * 64])) for b in range(nb)],
                      dtype=np.float32)
    codes = np.zeros(x.size, dtype=np.int64)
    for b in range(nb):
        a = absmax[b]
        for j in range(64):
            i = b * 64 + j
            codes[i] = nearest(NF4, float(x[i]) / float(a)) if a > 0 else 7
    total = 0.0
    for a in absmax:                        # in order, in double, as lavinia sums
        total += float(a)
    offset = np.float32(total / nb)
    scales = np.zeros(nb, dtype=np.float32)
    for g in range(0, nb, 256):
        c = np.array([np.float32(float(absmax[b]) - float(offset))
                      for b in range(g, min(g + 256, nb))], dtype=np.float32)
        a2 = np.float32(np.max(np.abs(c)))
        for k, b in enumerate(range(g, min(g + 256, nb))):
            q = nearest(dmap, float(c[k]) / float(a2)) if a2 > 0 else 127
            scales[b] = np.float32(float(dmap[q]) * float(a2) + float(offset))
    y = NF4[codes] * np.repeat(scales, 64)           # float32 products
    return y.astype(np.float32).reshape(w.shape)


def main():
    d = os.path.join(HERE, "llama-lm-f32")
    w = gl.read_safetensors(os.path.join(d, "model.safetensors"))
    q = {}
    for k, v in w.items():
        is_proj = k.startswith("model.layers.") and k.endswith("_proj.weight")
        if (is_proj or k == "lm_head.weight") and v.numel() % 64 == 0:
            q[k] = torch.tensor(nf4_roundtrip(v.float().numpy()), dtype=torch.float64)
        else:
            q[k] = v
    ids = [1, 5, 17, 33, 40, 8, 91, 2, 64, 13, 27, 55]
    logits = lm.forward(q, torch.tensor(ids))
    lm.write_ref(os.path.join(HERE, "nf4.bin"),
                 [("ids", np.array(ids, dtype=np.float64)),
                  ("wq0", q["model.layers.0.self_attn.q_proj.weight"].numpy()),
                  ("logits", logits.numpy())])
    print("wrote nf4.bin")


if __name__ == "__main__":
    main()
