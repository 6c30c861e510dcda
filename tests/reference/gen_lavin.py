#!/usr/bin/python3
"""gen_lavin.py: a small random LaVIN in lavinia's layout, LaVIN's image preprocessing by
PIL, and float64 outputs.

Run with Debian's interpreter (torch 1.13, numpy, PIL) after gen_llama_lm.py and
gen_image_ref.py, from this directory:

    cd tests/reference && /usr/bin/python3 gen_lavin.py

LaVIN (luogen1996/LaVIN; METHODS.md §1.1, FORMATS.md §4.4) reads the CLIP tower's class
token after every 4th residual block (before ln_post, without CLIP's projection) and sends
those tokens through adapter_proj: Linear(D, hidden_proj), SiLU, Linear(hidden_proj, dim).
Its images are resized to 224 x 224 with PIL's bicubic filter (aspect not kept, no crop) and
normalised with ImageNet's mean and std.

lavin-tiny/: config.json (model_type "lavin": text_config, vision_config, hidden_proj 16,
vision_feature_every 4) and model.safetensors: the text model of gen_llama_lm.py's shape
(model.*, lm_head), an 8-block tower (hidden 32, 2 heads, image 28, patch 14) under
vision_tower.vision_model.*, adapter_proj.conv_A / conv_B and adapter_modality_embedding.

lavin.bin (LVREF, tests/refdata.h):
  "pixels"      (3, 28, 28)   pixels fed to the tower
  "features"    (2, 32)       the class token after blocks 4 and 8
  "tokens"      (2, 48)       adapter_proj's output
  "R"           (2, 48)       a random weighting of the tokens
  "grad.pixels" (3, 28, 28)   d sum(tokens * R) / d pixels
  "ids"         (7,)          a prompt whose index 3 (id 95) marks the image
  "logits"      (8, 96)       the language model over the prompt with the 2 tokens spliced in
  "pre.NAME"    (3, 112, 112) LaVIN's preprocessing of images/NAME at size 112
"""

import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_llama_lm as lm  # noqa: E402
import gen_llava as lv  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261131
VL, EVERY, HP = 8, 4, 16
VM = lv.VM
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def tower_lavin(w, pixels):
    """LaVIN's features: the class token after every EVERY-th block"""
    hidden = lv.hidden_states(w, pixels, VL)
    feats = torch.stack([hidden[l][0] for l in range(EVERY, VL + 1, EVERY)], 0)
    w = {k: v.double() for k, v in w.items()}
    t = feats @ w["adapter_proj.conv_A.weight"].T + w["adapter_proj.conv_A.bias"]
    t = torch.nn.functional.silu(t)
    t = t @ w["adapter_proj.conv_B.weight"].T + w["adapter_proj.conv_B.bias"]
    return feats, t


def preprocess(path, size):
    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    a = np.asarray(img, dtype=np.float64) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def main():
    rs = np.random.RandomState(SEED)
    text = lm.make_weights(rs)
    saved_vl = lv.VL
    lv.VL = VL
    vis = lv.vision_weights(rs)
    lv.VL = saved_vl
    for k in [k for k in vis if k.startswith("multi_modal_projector")]:
        del vis[k]
    def lin(o, i):
        return torch.tensor(rs.standard_normal((o, i)) / np.sqrt(i), dtype=torch.float32)
    vis["adapter_proj.conv_A.weight"] = lin(HP, lv.VD)
    vis["adapter_proj.conv_A.bias"] = torch.tensor(0.1 * rs.standard_normal(HP), dtype=torch.float32)
    vis["adapter_proj.conv_B.weight"] = lin(lm.C, HP)
    vis["adapter_proj.conv_B.bias"] = torch.tensor(0.1 * rs.standard_normal(lm.C), dtype=torch.float32)
    vis["adapter_modality_embedding.weight"] = torch.tensor(rs.standard_normal((2, lm.C)),
                                                            dtype=torch.float32)
    pixels = torch.tensor(rs.standard_normal((3, lv.IMG, lv.IMG)), dtype=torch.float32).double()
    pixels.requires_grad_(True)
    feats, toks = tower_lavin(vis, pixels)
    R = torch.tensor(rs.standard_normal((2, lm.C)), dtype=torch.float32).double()
    (toks * R).sum().backward()
    grad = pixels.grad.detach()
    pixels, feats, toks = pixels.detach(), feats.detach(), toks.detach()
    ids = [1, 17, 33, 95, 40, 52, 8]
    emb = text["model.embed_tokens.weight"].double()
    seq = torch.cat([emb[ids[:3]], toks, emb[ids[4:]]], 0)
    w = dict(text)
    w["model.embed_tokens.weight"] = seq
    logits = lm.forward(w, torch.arange(seq.shape[0]))

    d = os.path.join(HERE, "lavin-tiny")
    os.makedirs(d, exist_ok=True)
    names = dict(text)
    names.update(vis)
    lm.write_safetensors(os.path.join(d, "model.safetensors"), names, "F32")
    config = {"architectures": ["LaVIN"], "model_type": "lavin", "hidden_proj": HP,
              "vision_feature_every": EVERY,
              "text_config": {"model_type": "llama", "vocab_size": lm.V, "hidden_size": lm.C,
                              "intermediate_size": lm.F, "num_hidden_layers": lm.L,
                              "num_attention_heads": lm.H, "num_key_value_heads": lm.KV,
                              "max_position_embeddings": 64, "rms_norm_eps": lm.EPS,
                              "rope_theta": lm.THETA, "tie_word_embeddings": False},
              "vision_config": {"model_type": "clip_vision_model", "hidden_size": lv.VD,
                                "intermediate_size": lv.VF, "num_hidden_layers": VL,
                                "num_attention_heads": lv.VH, "image_size": lv.IMG,
                                "patch_size": lv.P, "hidden_act": "quick_gelu",
                                "layer_norm_eps": 1e-5}}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    tensors = [("pixels", pixels.numpy()), ("features", feats.numpy()),
               ("tokens", toks.numpy()), ("R", R.numpy()), ("grad.pixels", grad.numpy()),
               ("ids", np.array(ids, dtype=np.float64)), ("logits", logits.numpy())]
    for name in ("photo.jpg", "alpha.png", "tiny.png", "tall.png", "wide.png"):
        tensors.append(("pre." + name, preprocess(os.path.join(HERE, "images", name), 112)))
    lm.write_ref(os.path.join(HERE, "lavin.bin"), tensors)
    print("wrote lavin-tiny/ and lavin.bin")


if __name__ == "__main__":
    main()
