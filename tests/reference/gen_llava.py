#!/usr/bin/python3
"""gen_llava.py: a small random LLaVA (llava-hf layout) and its float64 outputs.

Run with Debian's interpreter (torch 1.13, numpy), from this directory:

    cd tests/reference && /usr/bin/python3 gen_llava.py

It writes llava-tiny/ (config.json for LlavaForConditionalGeneration and model.safetensors
with the hub's tensor names: language_model.model.*, language_model.lm_head.weight,
vision_tower.vision_model.*, multi_modal_projector.*) and llava.bin (the LVREF layout of
tests/refdata.h):

  "pixels"    (3, 28, 28)  preprocessed pixels fed to the tower
  "features"  (4, 32)      hidden_states[-2] of the tower without the class token
  "tokens"    (4, 48)      the projector's output (linear, GELU, linear)
  "ids"       (7,)         a prompt with one image token (id 95) at index 3
  "logits"    (10, 96)     the language model's logits over the expanded sequence: the
                           image token replaced by the 4 image tokens
  "R"         (4, 48)      a random weighting of the tokens
  "grad.pixels" (3, 28, 28) d sum(tokens * R) / d pixels, through the projector and tower

The tower is CLIPVisionTransformer as transformers computes it: hidden 32, intermediate 64,
3 layers, 2 heads, image 28, patch 14 (4 patches and the class token), quick-GELU, layer
norm eps 1e-5, positions learned; LLaVA reads hidden_states[-2] (the output of the second of
three blocks) and drops the class token. The text model is the one of gen_llama_lm.py's
shape (vocab 96, hidden 48, 2 layers, 6 heads, 2 kv heads, untied head).
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_llama_lm as lm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261127
VD, VF, VL, VH, IMG, P = 32, 64, 3, 2, 28, 14
IMAGE_ID = 95
VM = "vision_tower.vision_model."


def vision_weights(rs):
    def lin(out, inp):
        return rs.standard_normal((out, inp)) / np.sqrt(inp)

    n = (IMG // P) ** 2 + 1
    w = {VM + "embeddings.class_embedding": rs.standard_normal(VD),
         VM + "embeddings.patch_embedding.weight": rs.standard_normal((VD, 3, P, P)) / np.sqrt(3 * P * P),
         VM + "embeddings.position_embedding.weight": 0.5 * rs.standard_normal((n, VD)),
         VM + "pre_layrnorm.weight": 1 + 0.2 * rs.standard_normal(VD),
         VM + "pre_layrnorm.bias": 0.2 * rs.standard_normal(VD),
         VM + "post_layernorm.weight": 1 + 0.2 * rs.standard_normal(VD),
         VM + "post_layernorm.bias": 0.2 * rs.standard_normal(VD),
         "multi_modal_projector.linear_1.weight": lin(lm.C, VD),
         "multi_modal_projector.linear_1.bias": 0.1 * rs.standard_normal(lm.C),
         "multi_modal_projector.linear_2.weight": lin(lm.C, lm.C),
         "multi_modal_projector.linear_2.bias": 0.1 * rs.standard_normal(lm.C)}
    for l in range(VL):
        p = VM + "encoder.layers.%d." % l
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[p + "self_attn.%s.weight" % name] = lin(VD, VD)
            w[p + "self_attn.%s.bias" % name] = 0.1 * rs.standard_normal(VD)
        for name in ("layer_norm1", "layer_norm2"):
            w[p + name + ".weight"] = 1 + 0.2 * rs.standard_normal(VD)
            w[p + name + ".bias"] = 0.2 * rs.standard_normal(VD)
        w[p + "mlp.fc1.weight"] = lin(VF, VD)
        w[p + "mlp.fc1.bias"] = 0.1 * rs.standard_normal(VF)
        w[p + "mlp.fc2.weight"] = lin(VD, VF)
        w[p + "mlp.fc2.bias"] = 0.1 * rs.standard_normal(VD)
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in w.items()}


def ln(x, w, b):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, 1e-5)


def hidden_states(w, pixels, layers=None):
    """the tower's hidden states: the embeddings after pre_layrnorm, then each block's output"""
    w = {k: v.double() for k, v in w.items()}
    x = torch.nn.functional.conv2d(pixels[None], w[VM + "embeddings.patch_embedding.weight"],
                                   stride=P)
    x = x.flatten(2).transpose(1, 2)[0]                       # (N, VD)
    x = torch.cat([w[VM + "embeddings.class_embedding"][None], x], 0)
    x = x + w[VM + "embeddings.position_embedding.weight"]
    x = ln(x, w[VM + "pre_layrnorm.weight"], w[VM + "pre_layrnorm.bias"])
    hidden = [x]
    hd = VD // VH
    for l in range(VL if layers is None else layers):
        p = VM + "encoder.layers.%d." % l
        n = ln(x, w[p + "layer_norm1.weight"], w[p + "layer_norm1.bias"])
        q, k, v = (n @ w[p + "self_attn.%s.weight" % s].T + w[p + "self_attn.%s.bias" % s]
                   for s in ("q_proj", "k_proj", "v_proj"))
        q, k, v = (t.view(-1, VH, hd) for t in (q, k, v))
        s = torch.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
        a = torch.einsum("hts,shd->thd", s.softmax(-1), v).reshape(-1, VD)
        x = x + a @ w[p + "self_attn.out_proj.weight"].T + w[p + "self_attn.out_proj.bias"]
        m = ln(x, w[p + "layer_norm2.weight"], w[p + "layer_norm2.bias"])
        m = m @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"]
        m = m * torch.sigmoid(1.702 * m)
        x = x + m @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
        hidden.append(x)
    return hidden


def tower(w, pixels):
    hidden = hidden_states(w, pixels)
    w = {k: v.double() for k, v in w.items()}
    feats = hidden[-2][1:]
    t = feats @ w["multi_modal_projector.linear_1.weight"].T + w["multi_modal_projector.linear_1.bias"]
    t = torch.nn.functional.gelu(t)
    t = t @ w["multi_modal_projector.linear_2.weight"].T + w["multi_modal_projector.linear_2.bias"]
    return feats, t


def main():
    rs = np.random.RandomState(SEED)
    text = lm.make_weights(rs)
    vis = vision_weights(rs)
    pixels = torch.tensor(rs.standard_normal((3, IMG, IMG)), dtype=torch.float32).double()
    pixels.requires_grad_(True)
    feats, toks = tower(vis, pixels)
    R = torch.tensor(rs.standard_normal((4, lm.C)), dtype=torch.float32).double()
    (toks * R).sum().backward()
    grad = pixels.grad.detach()
    pixels, feats, toks = pixels.detach(), feats.detach(), toks.detach()
    ids = [1, 17, 33, IMAGE_ID, 40, 52, 8]
    emb = text["model.embed_tokens.weight"].double()
    seq = torch.cat([emb[ids[:3]], toks, emb[ids[4:]]], 0)
    # the language model in float64 from embeddings: gen_llama_lm's forward with an
    # embedding table that is the sequence itself, looked up by position
    w = dict(text)
    w["model.embed_tokens.weight"] = seq
    logits = lm.forward(w, torch.arange(seq.shape[0]))
    d = os.path.join(HERE, "llava-tiny")
    os.makedirs(d, exist_ok=True)
    names = {"language_model." + k: v for k, v in text.items()}   # the hub layout
    names.update(vis)
    lm.write_safetensors(os.path.join(d, "model.safetensors"), names, "F32")
    config = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
              "image_token_index": IMAGE_ID, "projector_hidden_act": "gelu",
              "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
              "text_config": {"model_type": "llama", "vocab_size": lm.V, "hidden_size": lm.C,
                              "intermediate_size": lm.F, "num_hidden_layers": lm.L,
                              "num_attention_heads": lm.H, "num_key_value_heads": lm.KV,
                              "max_position_embeddings": 64, "rms_norm_eps": lm.EPS,
                              "rope_theta": lm.THETA, "tie_word_embeddings": False},
              "vision_config": {"model_type": "clip_vision_model", "hidden_size": VD,
                                "intermediate_size": VF, "num_hidden_layers": VL,
                                "num_attention_heads": VH, "image_size": IMG, "patch_size": P,
                                "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    lm.write_ref(os.path.join(HERE, "llava.bin"),
                 [("pixels", pixels.numpy()), ("features", feats.numpy()),
                  ("tokens", toks.numpy()), ("ids", np.array(ids, dtype=np.float64)),
                  ("logits", logits.numpy()), ("R", R.numpy()),
                  ("grad.pixels", grad.numpy())])
    print("wrote llava-tiny/ and llava.bin")


if __name__ == "__main__":
    main()
