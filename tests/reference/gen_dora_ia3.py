#!/usr/bin/python3
"""gen_dora_ia3.py: DoRA and (IA)^3 adapters on the small random LLaVA, in float64.

Run with Debian's interpreter after gen_llava.py and gen_lora.py, from this directory:

    cd tests/reference && /usr/bin/python3 gen_dora_ia3.py

PEFT's formulas, each written as the adapted weight, which is the same function of x and has
the same gradients:
  DoRA (FORMATS.md §3.4): W' = m * (W + s B A) / n, n = ||W + s B A|| per output row,
       DETACHED (PEFT's weight_norm.detach()); the bias unchanged.
  IA3: a feedforward module scales its input, W' = W * l (l of shape (1, in)); any other its
       output, W' = l * W and b' = l * b (l of shape (out, 1)).

It writes, as PEFT saves them:
  dora-tiny/  r 4, lora_alpha 8, use_dora, "all-linear" (decoder, tower, projector), llava-hf
              names: lora_A.weight, lora_B.weight, lora_magnitude_vector per module
  ia3-tiny/   target_modules ["k_proj", "v_proj", "down_proj", "fc2"], feedforward_modules
              ["down_proj", "fc2"] (the tower's k/v/fc2 too), ia3_l per module

and dora_ia3.bin (LVREF, tests/refdata.h): "logits.dora", "logits.ia3" (10, 96) over
llava.bin's spliced prompt; the gradients of sum(logits * RL) (RL from lora.bin) with respect
to every parameter: "da.SITE", "db.SITE", "dm.SITE" (DoRA's A, B, magnitude) and "il.SITE"
(IA3's vector), SITE in lavinia's site names.
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_llama_lm as lm  # noqa: E402
import gen_lora as gl  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261129


def read_ref(path):
    return {name: torch.tensor(a) for name, a in gl.read_lvref(path).items()}


def main():
    rs = np.random.RandomState(SEED)
    base = gl.read_safetensors(os.path.join(HERE, "llava-tiny", "model.safetensors"))
    ref = read_ref(os.path.join(HERE, "llava.bin"))
    RL = read_ref(os.path.join(HERE, "lora.bin"))["RL"]
    pixels, ids = ref["pixels"], [int(i) for i in ref["ids"]]
    mods = gl.modules()
    plain = gl.merged(base, [])

    # DoRA: random factors, magnitudes near the norms (so that m / n is not 1)
    s = 8 / 4
    dora = gl.make_adapter(rs, base, mods, 4)
    mags = {}
    for m, (site, a, b) in dora.items():
        n = (plain[m + ".weight"] + s * (b @ a)).norm(dim=1).detach()
        mag = n * torch.tensor(1 + 0.2 * rs.standard_normal(n.shape), dtype=torch.float32).double()
        mags[m] = mag.float().double().requires_grad_(True)
    w = dict(plain)
    for m, (site, a, b) in dora.items():
        full = plain[m + ".weight"] + s * (b @ a)
        w[m + ".weight"] = (mags[m] / full.norm(dim=1).detach())[:, None] * full
    out = gl.logits_of(w, pixels, ids)
    (out * RL).sum().backward()
    tensors = [("logits.dora", out.detach().numpy())]
    for m, (site, a, b) in dora.items():
        for p, t in (("da.", a), ("db.", b), ("dm.", mags[m])):
            g = t.grad if t.grad is not None else torch.zeros_like(t)
            tensors.append((p + site, g.detach().numpy()))

    # IA3
    targets = ("k_proj", "v_proj", "down_proj", "fc2")
    ff = ("down_proj", "fc2")
    ia3 = {}
    for m, site in mods:
        if not m.endswith(targets):
            continue
        out_f, in_f = plain[m + ".weight"].shape
        shape = (1, in_f) if m.endswith(ff) else (out_f, 1)
        ia3[m] = (site, torch.tensor(1 + 0.3 * rs.standard_normal(shape),
                                     dtype=torch.float32).double().requires_grad_(True))
    w = dict(plain)
    for m, (site, l) in ia3.items():
        if m.endswith(ff):
            w[m + ".weight"] = plain[m + ".weight"] * l
        else:
            w[m + ".weight"] = l * plain[m + ".weight"]
            if m + ".bias" in plain:
                w[m + ".bias"] = l[:, 0] * plain[m + ".bias"]
    out = gl.logits_of(w, pixels, ids)
    (out * RL).sum().backward()
    tensors.append(("logits.ia3", out.detach().numpy()))
    for m, (site, l) in ia3.items():
        g = l.grad if l.grad is not None else torch.zeros_like(l)
        tensors.append(("il." + site, g.detach().numpy()))

    # the folders, as PEFT writes them
    d = os.path.join(HERE, "dora-tiny")
    t = {}
    for m, (site, a, b) in dora.items():
        p = "base_model.model." + gl.hub_name(m)
        t[p + ".lora_A.weight"] = a.detach().float()
        t[p + ".lora_B.weight"] = b.detach().float()
        t[p + ".lora_magnitude_vector"] = mags[m].detach().float()
    os.makedirs(d, exist_ok=True)
    lm.write_safetensors(os.path.join(d, "adapter_model.safetensors"), t, "F32")
    cfg = gl.peft_config(4, 8, "all-linear", False)
    cfg["use_dora"] = True
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    d = os.path.join(HERE, "ia3-tiny")
    os.makedirs(d, exist_ok=True)
    t = {"base_model.model." + gl.hub_name(m) + ".ia3_l": l.detach().float()
         for m, (site, l) in ia3.items()}
    lm.write_safetensors(os.path.join(d, "adapter_model.safetensors"), t, "F32")
    cfg = {"auto_mapping": None, "base_model_name_or_path": "llava-tiny",
           "fan_in_fan_out": False, "feedforward_modules": list(ff), "inference_mode": True,
           "init_ia3_weights": True, "modules_to_save": None, "peft_type": "IA3",
           "revision": None, "target_modules": list(targets), "task_type": "CAUSAL_LM"}
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    lm.write_ref(os.path.join(HERE, "dora_ia3.bin"), tensors)
    print("wrote dora-tiny/, ia3-tiny/ and dora_ia3.bin (%d tensors)" % len(tensors))


if __name__ == "__main__":
    main()
