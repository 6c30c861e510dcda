#!/usr/bin/python3
"""gen_blocks.py: float64 reference states for one LLaMA decoder block and one CLIP encoder block.

Run with Debian's interpreter (torch 1.13, numpy), from this directory:

    cd tests/reference && /usr/bin/python3 gen_blocks.py

It writes llama_block.bin and clip_block.bin next to itself; both are committed, so `make check`
needs no Python. tests/unit/test-reference.c builds the same blocks from lavinia's public ops and
compares its output and every gradient with these (the llm.c train_gpt2.py write_state /
test_gpt2.c pattern).

The blocks (no biases, eps 1e-5, RoPE base 10000, positions 0..T-1):

  llama:  x (T=7, C=32), H=4 heads, KV=2 kv-heads, D=8, F=48
      n   = rmsnorm(x) * attn_norm
      q   = rope(n Wq^T as (T, H, D)),  k = rope(n Wk^T as (T, KV, D)),  v = n Wv^T as (T, KV, D)
      a   = causal softmax(q k^T / sqrt(D)) v, query head h reading kv head h // (H/KV)
            (Hugging Face repeat_kv), reshaped to (T, H*D)
      h   = x + a Wo^T
      m   = rmsnorm(h) * ffn_norm
      out = h + (silu(m W1^T) * (m W3^T)) W2^T
    RoPE is the Hugging Face half-split layout: pair i is (x[i], x[i + D/2]), angle
    p * 10000^(-2i/D) at position p.

  clip:   x (T=5, C=32), H=4, D=8, F=64, every linear with a bias, no causality
      n   = layernorm(x) * ln1.weight + ln1.bias
      a   = softmax(q k^T / sqrt(D)) v with q = n Wq^T + bq (likewise k, v), reshaped to (T, C)
      h   = x + a Wo^T + bo
      m   = layernorm(h) * ln2.weight + ln2.bias
      out = h + quick_gelu(m W1^T + b1) W2^T + b2,   quick_gelu(z) = z * sigmoid(1.702 z)

For each block loss = sum(out * R) with a fixed random R, so d loss / d out = R: the C test
seeds backward with R and compares every gradient.

Linear weights are in torch.nn.Linear's (out, in) layout. Random values come from numpy's
legacy RandomState (its stream is frozen across numpy versions): inputs and R ~ N(0, 1),
weights and biases ~ N(0, std = 1/sqrt(fan_in)), norm weights 1 + 0.2 N(0, 1), layernorm
biases 0.2 N(0, 1). Every input, weight and R is rounded to float32 first and then carried in
float64, so the C side (which loads them as F32) starts from exactly the same numbers; the
computation and the gradients are float64 torch autograd.

File layout (all integers uint32 little-endian, all data float64 little-endian, no padding):

    offset 0   magic   8 bytes  "LVREF\\0\\0\\0"
           8   version uint32   1
          12   count   uint32   number of tensors that follow
    per tensor, back to back:
               name_len uint32  bytes of the name (no terminating NUL), 1..63
               name     name_len bytes, ASCII
               ndim     uint32  0..4
               shape    ndim x uint32, each >= 1
               data     prod(shape) x float64, row-major (last dim fastest)
    The file ends right after the last tensor.

Tensor names: the inputs and weights ("x", "wq", ...), "R", "out", "loss" (shape (1)), and
"grad.NAME" for the gradient of the loss w.r.t. each input and weight NAME.

One gradient is zero in exact arithmetic: clip's grad.bk. Without a mask, the key bias adds
q_t . bk to every logit of query t alike, and softmax ignores such a shift. The file holds what
float64 autograd gives (round-off, ~1e-16), so a relative check makes no sense there; the C test
bounds it against the scale of grad.wk instead.

Bump VERSION when the layout or the meaning of a name changes; the C test then refuses old
files and says how to rerun this script.
"""

import os
import struct
import sys

import numpy as np
import torch

MAGIC = b"LVREF\0\0\0"
VERSION = 1
SEED = 20240611
HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------------------------
# random values, rounded to float32

class Gen:
    def __init__(self, seed):
        self.rs = np.random.RandomState(seed)

    def normal(self, shape, mean=0.0, std=1.0):
        a = self.rs.standard_normal(size=shape) * std + mean
        return torch.tensor(a.astype(np.float32).astype(np.float64), dtype=torch.float64)

    def linear(self, n_out, n_in):
        return self.normal((n_out, n_in), std=1.0 / np.sqrt(n_in))

    def bias(self, n_out, n_in):
        return self.normal((n_out,), std=1.0 / np.sqrt(n_in))


# ----------------------------------------------------------------------------------------------
# the ops, written out (torch 1.13 has neither scaled_dot_product_attention nor nn.RMSNorm)

def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def layernorm(x, w, b, eps):
    mean = x.mean(dim=-1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=-1, keepdim=True)     # biased, as nn.LayerNorm
    return (x - mean) * torch.rsqrt(var + eps) * w + b


def linear(x, w, b=None):
    y = x @ w.t()
    return y if b is None else y + b


def rope_hf(x, base):
    """x: (T, H, D) at positions 0..T-1; Hugging Face rotate_half layout."""
    T, _, D = x.shape
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.float64) / D))    # (D/2)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]        # (T, D/2)
    emb = torch.cat([ang, ang], dim=-1)[:, None, :]                                # (T, 1, D)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    rot = torch.cat([-x2, x1], dim=-1)
    return x * emb.cos().to(x.dtype) + rot * emb.sin().to(x.dtype)


def attention(q, k, v, scale, causal):
    """q: (T, H, D)  k, v: (S, KV, D); query head h reads kv head h // (H / KV)."""
    T, H, D = q.shape
    S, KV, _ = k.shape
    rep = H // KV
    k = k.repeat_interleave(rep, dim=1)                     # (S, H, D)
    v = v.repeat_interleave(rep, dim=1)
    qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)   # (H, T|S, D)
    att = (qh @ kh.transpose(1, 2)) * scale                 # (H, T, S)
    if causal:
        # query t sits at position S - T + t and sees keys s <= S - T + t
        t = torch.arange(T)[:, None] + (S - T)
        s = torch.arange(S)[None, :]
        att = att.masked_fill(s > t, float("-inf"))
    att = torch.softmax(att, dim=-1)
    return (att @ vh).transpose(0, 1)                       # (T, H, D)


def silu(z):
    return z * torch.sigmoid(z)


def quick_gelu(z):
    return z * torch.sigmoid(1.702 * z)


# ----------------------------------------------------------------------------------------------
# the blocks: each returns (ordered leaves, R, forward function)

def llama_block(gen):
    T, C, H, KV, D, F = 7, 32, 4, 2, 8, 48
    eps = 1e-5
    p = {}
    p["x"] = gen.normal((T, C))
    p["attn_norm"] = gen.normal((C,), mean=1.0, std=0.2)
    p["wq"] = gen.linear(H * D, C)
    p["wk"] = gen.linear(KV * D, C)
    p["wv"] = gen.linear(KV * D, C)
    p["wo"] = gen.linear(C, H * D)
    p["ffn_norm"] = gen.normal((C,), mean=1.0, std=0.2)
    p["w1"] = gen.linear(F, C)
    p["w2"] = gen.linear(C, F)
    p["w3"] = gen.linear(F, C)
    R = gen.normal((T, C))

    def forward(p):
        x = p["x"]
        n = rmsnorm(x, p["attn_norm"], eps)
        q = rope_hf(linear(n, p["wq"]).reshape(T, H, D), 10000.0)
        k = rope_hf(linear(n, p["wk"]).reshape(T, KV, D), 10000.0)
        v = linear(n, p["wv"]).reshape(T, KV, D)
        a = attention(q, k, v, 1.0 / np.sqrt(D), causal=True).reshape(T, H * D)
        h = x + linear(a, p["wo"])
        m = rmsnorm(h, p["ffn_norm"], eps)
        return h + linear(silu(linear(m, p["w1"])) * linear(m, p["w3"]), p["w2"])

    return p, R, forward


def clip_block(gen):
    T, C, H, D, F = 5, 32, 4, 8, 64
    eps = 1e-5
    p = {}
    p["x"] = gen.normal((T, C))
    p["ln1.weight"] = gen.normal((C,), mean=1.0, std=0.2)
    p["ln1.bias"] = gen.normal((C,), std=0.2)
    for name in ("q", "k", "v", "o"):
        p["w" + name] = gen.linear(C, C)
        p["b" + name] = gen.bias(C, C)
    p["ln2.weight"] = gen.normal((C,), mean=1.0, std=0.2)
    p["ln2.bias"] = gen.normal((C,), std=0.2)
    p["fc1.weight"] = gen.linear(F, C)
    p["fc1.bias"] = gen.bias(F, C)
    p["fc2.weight"] = gen.linear(C, F)
    p["fc2.bias"] = gen.bias(C, F)
    R = gen.normal((T, C))

    def forward(p):
        x = p["x"]
        n = layernorm(x, p["ln1.weight"], p["ln1.bias"], eps)
        q = linear(n, p["wq"], p["bq"]).reshape(T, H, D)
        k = linear(n, p["wk"], p["bk"]).reshape(T, H, D)
        v = linear(n, p["wv"], p["bv"]).reshape(T, H, D)
        a = attention(q, k, v, 1.0 / np.sqrt(D), causal=False).reshape(T, C)
        h = x + linear(a, p["wo"], p["bo"])
        m = layernorm(h, p["ln2.weight"], p["ln2.bias"], eps)
        return h + linear(quick_gelu(linear(m, p["fc1.weight"], p["fc1.bias"])),
                          p["fc2.weight"], p["fc2.bias"])

    return p, R, forward


# ----------------------------------------------------------------------------------------------
# run, write, read back

def run_block(p, R, forward):
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    out = forward(leaves)
    loss = (out * R).sum()
    loss.backward()
    tensors = [(k, v) for k, v in p.items()]
    tensors.append(("R", R))
    tensors.append(("out", out.detach()))
    tensors.append(("loss", loss.detach().reshape(1)))
    tensors += [("grad." + k, leaves[k].grad) for k in p]
    return tensors


# gradients that are zero in exact arithmetic (see the header): no relative error for them
ZERO_GRADS = {"grad.bk": "grad.wk"}


def f32_error_estimate(p, R, forward, ref):
    """The same block in float32 (torch CPU): the largest max|a - b| / max|b| over the tensors,
    a rough guide for the C test's tolerance. Zero gradients are measured against the scale of
    their partner instead, as the C test does."""
    leaves = {k: v.float().requires_grad_(True) for k, v in p.items()}
    out = forward(leaves)
    (out * R.float()).sum().backward()
    got = {"out": out.detach().double()}
    got.update({"grad." + k: v.grad.double() for k, v in leaves.items()})
    refs = dict(ref)
    worst = 0.0
    for name, t in ref:
        if name in got:
            scale = refs[ZERO_GRADS[name]] if name in ZERO_GRADS else t
            worst = max(worst, ((got[name] - t).abs().max() / scale.abs().max()).item())
    return worst


def write_file(path, tensors):
    with open(path + ".tmp", "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<II", VERSION, len(tensors)))
        for name, t in tensors:
            nb = name.encode("ascii")
            assert 1 <= len(nb) <= 63, name
            a = t.detach().numpy().astype("<f8", copy=False)
            assert a.ndim <= 4 and all(d >= 1 for d in a.shape), name
            assert np.all(np.isfinite(a)), name
            f.write(struct.pack("<I", len(nb)) + nb)
            f.write(struct.pack("<I", a.ndim) + struct.pack("<%dI" % a.ndim, *a.shape))
            f.write(np.ascontiguousarray(a).tobytes())
    os.replace(path + ".tmp", path)


def read_file(path):
    with open(path, "rb") as f:
        buf = f.read()
    assert buf[:8] == MAGIC
    version, count = struct.unpack_from("<II", buf, 8)
    assert version == VERSION
    off, out = 16, {}
    for _ in range(count):
        (nlen,) = struct.unpack_from("<I", buf, off)
        name = buf[off + 4: off + 4 + nlen].decode("ascii")
        off += 4 + nlen
        (ndim,) = struct.unpack_from("<I", buf, off)
        shape = struct.unpack_from("<%dI" % ndim, buf, off + 4)
        off += 4 + 4 * ndim
        n = int(np.prod(shape)) if ndim else 1
        out[name] = np.frombuffer(buf, dtype="<f8", count=n, offset=off).reshape(shape)
        off += 8 * n
    assert off == len(buf)
    return out


def main():
    torch.set_default_dtype(torch.float64)
    gen = Gen(SEED)
    for fname, build in (("llama_block.bin", llama_block), ("clip_block.bin", clip_block)):
        p, R, forward = build(gen)
        tensors = run_block(p, R, forward)
        path = os.path.join(HERE, fname)
        write_file(path, tensors)
        refs = dict(tensors)
        for name, partner in ZERO_GRADS.items():
            if name in refs:
                assert refs[name].abs().max() <= 1e-12 * refs[partner].abs().max(), name
        back = read_file(path)
        for name, t in tensors:
            assert np.array_equal(back[name], t.detach().numpy()), name
        print("%s: %d tensors, %d bytes, loss %.9f, float32 rel. error ~%.1e"
              % (fname, len(tensors), os.path.getsize(path), tensors[-len(p) - 1][1].item(),
                 f32_error_estimate(p, R, forward, tensors)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
