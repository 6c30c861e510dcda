#!/usr/bin/python3
"""gen_plugins.py: the two plugin methods (plugins/vera.c, plugins/prompt-tuning.c) on the
small random LLaVA, in float64.

Run with Debian's interpreter after gen_llava.py and gen_lora.py, from this directory:

    cd tests/reference && /usr/bin/python3 gen_plugins.py

PEFT's formulas:
  VeRA: y = W x + b + lambda_b * (B[:out] (lambda_d * (A[:, :in] x))), A (r, max in) and
        B (max out, r) shared by every module and frozen; written here as the adapted weight
        W + (lambda_b B[:out]) (lambda_d A[:, :in]), the same function with the same gradients.
  prompt tuning: num_virtual_tokens rows put before the sequence's input embeddings (positions
        0..P-1, the prompt after them); the logits of the prompt's positions.

It writes, as PEFT saves them:
  vera-tiny/   r 4, target_modules ["q_proj", "v_proj", "o_proj", "fc1"] (decoder and tower:
               modules of several shapes, so the shared projections are sliced),
               base_model.vera_A / base_model.vera_B and vera_lambda_b / vera_lambda_d
  ptune-tiny/  3 virtual tokens, prompt_embeddings (3, 48)

and plugins.bin (LVREF): "logits.vera", "logits.ptune" (10, 96); the gradients of
sum(logits * RL) (RL from lora.bin): "vb.SITE", "vd.SITE" (lambda_b, lambda_d) and
"prompt" (the rows).
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
SEED = 20261130


def main():
    rs = np.random.RandomState(SEED)
    base = gl.read_safetensors(os.path.join(HERE, "llava-tiny", "model.safetensors"))
    ref = {k: torch.tensor(v) for k, v in gl.read_lvref(os.path.join(HERE, "llava.bin")).items()}
    RL = torch.tensor(gl.read_lvref(os.path.join(HERE, "lora.bin"))["RL"])
    pixels, ids = ref["pixels"], [int(i) for i in ref["ids"]]
    plain = gl.merged(base, [])

    def f32(a):
        return torch.tensor(a, dtype=torch.float32).double()

    # VeRA
    r = 4
    mods = [(m, s) for m, s in gl.modules() if m.endswith(("q_proj", "v_proj", "o_proj", "fc1"))]
    max_out = max(plain[m + ".weight"].shape[0] for m, _ in mods)
    max_in = max(plain[m + ".weight"].shape[1] for m, _ in mods)
    A = f32(rs.uniform(-1, 1, (r, max_in)) / np.sqrt(max_in))
    B = f32(rs.uniform(-1, 1, (max_out, r)) / np.sqrt(r))
    lam = {}
    for m, site in mods:
        out_f = plain[m + ".weight"].shape[0]
        lam[m] = (site, f32(rs.standard_normal(out_f)).requires_grad_(True),
                  f32(0.1 + rs.standard_normal(r)).requires_grad_(True))
    w = dict(plain)
    for m, (site, lb, ld) in lam.items():
        out_f, in_f = plain[m + ".weight"].shape
        w[m + ".weight"] = plain[m + ".weight"] + (lb[:, None] * B[:out_f]) @ (ld[:, None] * A[:, :in_f])
    out = gl.logits_of(w, pixels, ids)
    (out * RL).sum().backward()
    tensors = [("logits.vera", out.detach().numpy())]
    for m, (site, lb, ld) in lam.items():
        for p, t in (("vb.", lb), ("vd.", ld)):
            g = t.grad if t.grad is not None else torch.zeros_like(t)
            tensors.append((p + site, g.detach().numpy()))
    d = os.path.join(HERE, "vera-tiny")
    os.makedirs(d, exist_ok=True)
    t = {"base_model.vera_A": A.float(), "base_model.vera_B": B.float()}
    for m, (site, lb, ld) in lam.items():
        p = "base_model.model." + gl.hub_name(m)
        t[p + ".vera_lambda_b"] = lb.detach().float()
        t[p + ".vera_lambda_d"] = ld.detach().float()
    lm.write_safetensors(os.path.join(d, "adapter_model.safetensors"), t, "F32")
    cfg = {"auto_mapping": None, "base_model_name_or_path": "llava-tiny", "bias": "none",
           "d_initial": 0.1, "fan_in_fan_out": False, "inference_mode": True,
           "layers_pattern": None, "layers_to_transform": None, "modules_to_save": None,
           "peft_type": "VERA", "projection_prng_key": 0, "r": r, "revision": None,
           "save_projection": True, "target_modules": ["q_proj", "v_proj", "o_proj", "fc1"],
           "task_type": "CAUSAL_LM", "vera_dropout": 0.0}
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")

    # prompt tuning: the rows before the spliced prompt
    P = 3
    prompt = f32(rs.standard_normal((P, lm.C))).requires_grad_(True)
    vis = {k: v for k, v in plain.items() if k.startswith("vision_tower") or k.startswith("multi")}
    _, toks = gl.lv.tower(vis, pixels)
    text = {k: v for k, v in plain.items() if k.startswith("model.") or k.startswith("lm_head")}
    emb = text["model.embed_tokens.weight"]
    seq = torch.cat([prompt, emb[ids[:3]], toks, emb[ids[4:]]], 0)
    text["model.embed_tokens.weight"] = seq
    out = lm.forward(text, torch.arange(seq.shape[0]))[P:]
    (out * RL).sum().backward()
    tensors += [("logits.ptune", out.detach().numpy()), ("prompt", prompt.grad.numpy())]
    d = os.path.join(HERE, "ptune-tiny")
    os.makedirs(d, exist_ok=True)
    lm.write_safetensors(os.path.join(d, "adapter_model.safetensors"),
                         {"prompt_embeddings": prompt.detach().float()}, "F32")
    cfg = {"auto_mapping": None, "base_model_name_or_path": "llava-tiny", "inference_mode": True,
           "num_attention_heads": lm.H, "num_layers": lm.L, "num_transformer_submodules": 1,
           "num_virtual_tokens": P, "peft_type": "PROMPT_TUNING", "prompt_tuning_init": "RANDOM",
           "prompt_tuning_init_text": None, "revision": None, "task_type": "CAUSAL_LM",
           "token_dim": lm.C, "tokenizer_kwargs": None, "tokenizer_name_or_path": None}
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    lm.write_ref(os.path.join(HERE, "plugins.bin"), tensors)
    print("wrote vera-tiny/, ptune-tiny/ and plugins.bin (%d tensors)" % len(tensors))


if __name__ == "__main__":
    main()
