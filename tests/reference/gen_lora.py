#!/usr/bin/python3
"""gen_lora.py: LoRA adapters on the small random LLaVA of gen_llava.py, in float64.

Run with Debian's interpreter (torch 1.13, numpy), from this directory, after gen_llava.py:

    cd tests/reference && /usr/bin/python3 gen_lora.py

PEFT's formulas (FORMATS.md §3.4): an adapted linear computes x W^T + b + s (x A^T) B^T with
s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora. Here that is written as the
weight W + s B A, which is the same function; autograd gives the gradients of A and B.

It writes three adapters, as PEFT saves them, and lora.bin (the LVREF layout of
tests/refdata.h):

  lora-tiny/     r 4, lora_alpha 8, target_modules "all-linear": every linear of the language
                 model, the vision tower and the projector (not lm_head), in llava-hf's module
                 names (base_model.model.language_model.model.layers.N...); factors random
                 (init_lora_weights false), so every gradient is nonzero
  rslora-tiny/   r 2, lora_alpha 4, use_rslora, target_modules ["q_proj", "v_proj"] (suffixes:
                 the language model's and the vision tower's), in the module names of
                 transformers >= 4.52 (base_model.model.model.language_model.layers.N...)
  lora-mts/      r 2 on ["q_proj"] (suffix: the language model's and the tower's) with
                 modules_to_save ["multi_modal_projector", "lm_head"]: whole new projector
                 weights and biases and a new output head, as PEFT saves them
                 (base_model.model.multi_modal_projector.linear_1.weight, ...)
  lora-text.gguf the language-model half of lora-tiny plus a LoRA of the token embedding
                 (PEFT's lora_embedding_A (r, V), lora_embedding_B (C, r)), as llama.cpp's
                 convert_lora_to_gguf.py writes them (FORMATS.md §2.9):
                 blk.N.attn_q.weight.lora_a/.lora_b, q/k B rows permuted to Meta order,
                 token_embd.weight.lora_a holding A transposed, adapter.lora.alpha 8

  "logits.lora"    (10, 96)  logits over llava.bin's spliced prompt with lora-tiny
  "logits.rslora"  (10, 96)  with rslora-tiny
  "logits.stack"   (10, 96)  with both at once
  "logits.half"    (10, 96)  with lora-tiny at scale 0.5 (s B A halved)
  "logits.text"    (10, 96)  with lora-text (language-model sites and the embedding)
  "logits.mts"     (10, 96)  with lora-mts
  "RL"             (10, 96)  a random weighting; the loss is sum(logits * RL)
  "a.SITE" / "b.SITE"        d loss / d A and d B of lora-tiny at each site (lavinia's site
                             names: llm.0.attn.q, vit.1.mlp.fc1, proj.1, ...)
  "ra.SITE" / "rb.SITE"      the same for rslora-tiny alone
"""

import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_llama_lm as lm  # noqa: E402
import gen_llava as lv  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261128

TEXT = {"self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj": "attn.v",
        "self_attn.o_proj": "attn.o", "mlp.gate_proj": "ffn.gate", "mlp.up_proj": "ffn.up",
        "mlp.down_proj": "ffn.down"}
VIS = {"self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj": "attn.v",
       "self_attn.out_proj": "attn.o", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        arr = np.frombuffer(data[8 + n + a:8 + n + b], dtype="<f4").reshape(h["shape"])
        out[name] = torch.tensor(arr.copy(), dtype=torch.float64)
    return out


def read_lvref(path):
    """name -> float64 array of an LVREF file (tests/refdata.h)"""
    with open(path, "rb") as f:
        data = f.read()
    out, p = {}, 16
    for _ in range(struct.unpack("<I", data[12:16])[0]):
        n = struct.unpack("<I", data[p:p + 4])[0]
        name = data[p + 4:p + 4 + n].decode()
        p += 4 + n
        nd = struct.unpack("<I", data[p:p + 4])[0]
        shape = struct.unpack("<%dI" % nd, data[p + 4:p + 4 + 4 * nd])
        p += 4 + 4 * nd
        cnt = int(np.prod(shape))
        out[name] = np.frombuffer(data[p:p + 8 * cnt], dtype="<f8").reshape(shape)
        p += 8 * cnt
    return out


def modules():
    """(plain module path, lavinia site name, in, out) of every linear but lm_head"""
    out = []
    for l in range(lm.L):
        for m, s in TEXT.items():
            w = "model.layers.%d.%s" % (l, m)
            out.append((w, "llm.%d.%s" % (l, s)))
    for l in range(lv.VL):
        for m, s in VIS.items():
            out.append((lv.VM + "encoder.layers.%d.%s" % (l, m), "vit.%d.%s" % (l, s)))
    out.append(("multi_modal_projector.linear_1", "proj.1"))
    out.append(("multi_modal_projector.linear_2", "proj.2"))
    return out


def hub_name(plain):
    """llava-hf's module path"""
    lm_part = plain.startswith("model.") or plain.startswith("lm_head")
    return "language_model." + plain if lm_part else plain


def new_name(plain):
    """transformers >= 4.52's module path"""
    if plain.startswith("model."):
        return "model.language_model." + plain[len("model."):]
    return "model." + plain


def make_adapter(rs, base, mods, r):
    """random A (r, in) and B (out, r) for each module, as leaves that need gradients"""
    ad = {}
    for plain, site in mods:
        w = base[hub_name(plain) + ".weight"]
        out_f, in_f = w.shape
        a = torch.tensor(rs.uniform(-1, 1, (r, in_f)) / np.sqrt(in_f), dtype=torch.float32)
        b = torch.tensor(rs.uniform(-1, 1, (out_f, r)) / np.sqrt(r), dtype=torch.float32)
        ad[plain] = (site, a.double().requires_grad_(True), b.double().requires_grad_(True))
    return ad


def merged(base, adapters, emb=None):
    """the base weights (plain names) with s B A added: adapters = [(ad, s), ...]; emb:
    (A, B, s) of an embedding LoRA, whose table gains s (B A)^T"""
    w = {}
    for k, v in base.items():
        if k.startswith("language_model."):
            k = k[len("language_model."):]
        w[k] = v
    for ad, s in adapters:
        for plain, (site, a, b) in ad.items():
            w[plain + ".weight"] = w[plain + ".weight"] + s * (b @ a)
    if emb is not None:
        a, b, s = emb
        w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"] + s * (b @ a).T
    return w


def logits_of(w, pixels, ids):
    vis = {k: v for k, v in w.items() if k.startswith(lv.VM) or k.startswith("multi_modal")}
    _, toks = lv.tower(vis, pixels)
    text = {k: v for k, v in w.items() if k.startswith("model.") or k.startswith("lm_head")}
    emb = text["model.embed_tokens.weight"]
    seq = torch.cat([emb[ids[:3]], toks, emb[ids[4:]]], 0)
    text["model.embed_tokens.weight"] = seq
    return lm.forward(text, torch.arange(seq.shape[0]))


def write_peft(d, ad, naming, config, saved=None):
    os.makedirs(d, exist_ok=True)
    t = {"base_model.model." + naming(k): v.float() for k, v in (saved or {}).items()}
    for plain, (site, a, b) in ad.items():
        p = "base_model.model." + naming(plain)
        t[p + ".lora_A.weight"] = a.detach().float()
        t[p + ".lora_B.weight"] = b.detach().float()
    lm.write_safetensors(os.path.join(d, "adapter_model.safetensors"), t, "F32")
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def peft_config(r, alpha, targets, rslora):
    """the keys PEFT 0.13 writes for a LoraConfig"""
    return {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "llava-tiny",
            "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
            "init_lora_weights": False, "layer_replication": None, "layers_pattern": None,
            "layers_to_transform": None, "loftq_config": {}, "lora_alpha": alpha,
            "lora_dropout": 0.05, "megatron_config": None, "megatron_core": "megatron.core",
            "modules_to_save": None, "peft_type": "LORA", "r": r, "rank_pattern": {},
            "revision": None, "target_modules": targets, "task_type": "CAUSAL_LM",
            "use_dora": False, "use_rslora": rslora}


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def hf_to_meta(b, heads):
    """HF half-split rows of q/k -> Meta adjacent pairs, as the converter permutes them"""
    out_f = b.shape[0]
    hd = out_f // heads
    return b.reshape(heads, 2, hd // 2, -1).swapaxes(1, 2).reshape(out_f, -1)


def write_gguf(path, ad, alpha, emb):
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [("general.architecture", 8, s("llama")), ("general.type", 8, s("adapter")),
          ("adapter.type", 8, s("lora")), ("adapter.lora.alpha", 6, struct.pack("<f", alpha))]
    tensors = []
    for plain, (site, a, b) in ad.items():
        if not plain.startswith("model.layers."):
            continue
        layer = int(plain.split(".")[2])
        mod = ".".join(plain.split(".")[3:])
        base = "blk.%d.%s.weight" % (layer, GGUF_NAMES[mod])
        bm = b.detach().float().numpy()
        if mod == "self_attn.q_proj":
            bm = hf_to_meta(bm, lm.H)
        elif mod == "self_attn.k_proj":
            bm = hf_to_meta(bm, lm.KV)
        tensors.append((base + ".lora_a", a.detach().float().numpy()))
        tensors.append((base + ".lora_b", np.ascontiguousarray(bm)))
    ea, eb = emb
    tensors.append(("token_embd.weight.lora_a", np.ascontiguousarray(ea.detach().float().numpy().T)))
    tensors.append(("token_embd.weight.lora_b", eb.detach().float().numpy()))
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, t, v in kv:
        head += s(k) + struct.pack("<I", t) + v
    off, blobs = 0, []
    for name, arr in tensors:
        head += s(name) + struct.pack("<I", 2) + struct.pack("<QQ", arr.shape[1], arr.shape[0])
        head += struct.pack("<IQ", 0, off)                    # F32, offset
        blob = arr.astype("<f4").tobytes()
        blob += b"\0" * ((32 - len(blob) % 32) % 32)
        blobs.append(blob)
        off += len(blob)
    head += b"\0" * ((32 - len(head) % 32) % 32)
    with open(path, "wb") as f:
        f.write(head + b"".join(blobs))


def grads(ad, prefix_a, prefix_b):
    out = []
    for plain, (site, a, b) in ad.items():
        # the vision tower's last block does not run (LLaVA reads hidden_states[-2]): zero
        for p, t in ((prefix_a, a), (prefix_b, b)):
            g = t.grad if t.grad is not None else torch.zeros_like(t)
            out.append((p + site, g.detach().numpy()))
    return out


def main():
    rs = np.random.RandomState(SEED)
    base = read_safetensors(os.path.join(HERE, "llava-tiny", "model.safetensors"))
    ref = read_lvref(os.path.join(HERE, "llava.bin"))
    pixels = torch.tensor(ref["pixels"])
    ids = [int(i) for i in ref["ids"]]

    mods = modules()
    lora = make_adapter(rs, base, mods, 4)
    s_lora = 8 / 4
    qv = [(m, s) for m, s in mods if m.endswith("q_proj") or m.endswith("v_proj")]
    rsl = make_adapter(rs, base, qv, 2)
    s_rs = 4 / np.sqrt(2)
    RL = torch.tensor(rs.standard_normal((10, lm.V)), dtype=torch.float64)

    out = logits_of(merged(base, [(lora, s_lora)]), pixels, ids)
    (out * RL).sum().backward()
    tensors = [("logits.lora", out.detach().numpy()), ("RL", RL.numpy())]
    tensors += grads(lora, "a.", "b.")
    out = logits_of(merged(base, [(rsl, s_rs)]), pixels, ids)
    (out * RL).sum().backward()
    tensors += [("logits.rslora", out.detach().numpy())] + grads(rsl, "ra.", "rb.")
    with torch.no_grad():
        tensors.append(("logits.stack", logits_of(merged(base, [(lora, s_lora), (rsl, s_rs)]),
                                                  pixels, ids).numpy()))
        tensors.append(("logits.half", logits_of(merged(base, [(lora, 0.5 * s_lora)]),
                                                 pixels, ids).numpy()))

    # modules_to_save: new projector and head weights, in place of the base's
    qo = [(m, s) for m, s in mods if m.endswith("q_proj")]
    mts = make_adapter(rs, base, qo, 2)
    saved = {}
    for name in ("multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_1.bias",
                 "multi_modal_projector.linear_2.weight", "multi_modal_projector.linear_2.bias",
                 "lm_head.weight"):
        b = base[hub_name(name)]
        saved[name] = (b + 0.1 * torch.tensor(rs.standard_normal(tuple(b.shape)),
                                              dtype=torch.float32)).float().double()
    with torch.no_grad():
        w = merged(base, [(mts, 1.0)])
        w.update(saved)
        tensors.append(("logits.mts", logits_of(w, pixels, ids).numpy()))
    # an embedding LoRA for the GGUF file (drawn last: the adapters above stay as they were)
    emb_a = torch.tensor(rs.uniform(-1, 1, (4, lm.V)), dtype=torch.float32).double()
    emb_b = torch.tensor(rs.uniform(-1, 1, (lm.C, 4)) / 2, dtype=torch.float32).double()
    with torch.no_grad():
        text = {k: v for k, v in lora.items() if k.startswith("model.")}
        tensors.append(("logits.text", logits_of(merged(base, [(text, s_lora)],
                                                        (emb_a, emb_b, s_lora)),
                                                 pixels, ids).numpy()))
    cfg = peft_config(2, 2, ["q_proj"], False)
    cfg["modules_to_save"] = ["multi_modal_projector", "lm_head"]
    write_peft(os.path.join(HERE, "lora-mts"), mts, hub_name, cfg, saved)

    write_peft(os.path.join(HERE, "lora-tiny"), lora, hub_name,
               peft_config(4, 8, "all-linear", False))
    write_peft(os.path.join(HERE, "rslora-tiny"), rsl, new_name,
               peft_config(2, 4, ["q_proj", "v_proj"], True))
    write_gguf(os.path.join(HERE, "lora-text.gguf"), lora, 8.0, (emb_a, emb_b))
    lm.write_ref(os.path.join(HERE, "lora.bin"), tensors)
    print("wrote lora-tiny/, rslora-tiny/, lora-mts/, lora-text.gguf and lora.bin (%d tensors)"
          % len(tensors))


if __name__ == "__main__":
    main()
