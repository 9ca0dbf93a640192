#!/usr/bin/env python3
"""ref_kl.py: the golden of `forge-stream eval --base` (numpy only, double).

An independent forward of a llama-family checkpoint (Hugging Face's
LlamaForCausalLM as its documentation and config.json define it: RMSNorm,
rotate-half RoPE with llama3 rope scaling, GQA causal attention, SiLU-gated
MLP, untied or tied head), written here without the project's code, run in
float64 on the original (F32/BF16/F16 safetensors) and on a GPTQ v1 checkpoint
(qweight/qzeros/scales/g_idx, decoded here by the GPTQ v1 rule
W[o, c] = (code - (qzero + 1)) * scale over group g_idx[c]). From the logits of
both on the same windows it computes the figures of specifications.md §11.2
and writes them as JSON:

  per scored token (position t of a window predicting the id at t + 1):
    nll   = logsumexp(z) - z[target]                (natural log)
    KL    = sum_j p_base(j) (log p_base(j) - log p_q(j))
    same  = argmax z_base == argmax z_q              (first index on ties)
    dp    = p_q(target) - p_base(target)             (llama.cpp's Δp)
    dpt   = p_q(top) - p_base(top), top = argmax z_base
  ppl = exp(mean nll); kl_median / kl_p99: linear interpolation at position
  q (n - 1) of the sorted values; rms_dp = sqrt(mean dp^2).

It also prints the smallest gap between the two largest logits of either
model over the tokens (how far the top-1 share is from a float tie).

The committed fixture (tests/data/kl/) was made once with:
  build/gen-tiny --type llama --out tests/data/kl/base --seed 17 --layers 2 \
      --dtype f32 --shards 1 --hidden 32 --intermediate 32 --heads 2
  bin/forge-stream quantize --model tests/data/kl/base --out tests/data/kl/gptq \
      --calib calib.u32 --samples 8 --seq-len 32 --bits 4 --group-size 32 \
      --act-order --format gptq
  tools/ref_kl.py --base tests/data/kl/base --model tests/data/kl/gptq \
      --tokens tests/data/kl/tokens.u32 --seq-len 32 --out tests/data/kl/golden.json
(calib.u32 and tokens.u32: numpy default_rng(20261204).integers(3, 96), first
8 x 32 x 2 ids, then 8 x 32; tokens.u32 is committed). The golden reads the
committed files, so it stays true whatever the quantizer does later.

usage: tools/ref_kl.py --base DIR --model DIR --tokens FILE.u32 --seq-len L
                       [--windows K] [--out golden.json]
"""
import argparse, json, math, os, struct, sys
import numpy as np

DT = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "U8": np.uint8, "F64": np.float64}


def read_st(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    base, out = 8 + n, {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        buf = raw[base + b:base + e]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(buf, dtype=np.dtype(DT[v["dtype"]]).newbyteorder("<"))
        out[k] = a.reshape(v["shape"])
    return out


def read_ckpt(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    t = {}
    for f in files:
        t.update(read_st(os.path.join(d, f)))
    return json.load(open(os.path.join(d, "config.json"))), t


def unpack_along(words, bits, n, axis):
    """Codes of `bits` packed little-endian in int32 words along axis 0 or 1."""
    u = words.astype(np.int64) & 0xFFFFFFFF
    per = 32 // bits
    mask = (1 << bits) - 1
    if axis == 0:
        c = np.stack([(u >> (bits * i)) & mask for i in range(per)], axis=1)   # [words, per, cols]
        return c.reshape(-1, u.shape[1])[:n]
    c = np.stack([(u >> (bits * i)) & mask for i in range(per)], axis=2)       # [rows, words, per]
    return c.reshape(u.shape[0], -1)[:, :n]


def linear(cfg, t, name):
    """The f64 [out, in] weight of linear `name` (plain or GPTQ v1)."""
    if name + ".weight" in t:
        return t[name + ".weight"].astype(np.float64)
    q = cfg["quantization_config"]
    bits = int(q["bits"])
    if 32 % bits:
        sys.exit("ref_kl.py: %d-bit GPTQ is not decoded here" % bits)
    scales = t[name + ".scales"].astype(np.float64)           # [groups, out]
    out = scales.shape[1]
    gidx = t[name + ".g_idx"].astype(np.int64)                # [in]
    nin = gidx.shape[0]
    codes = unpack_along(t[name + ".qweight"], bits, nin, 0)  # [in, out]
    zeros = unpack_along(t[name + ".qzeros"], bits, out, 1) + 1   # [groups, out]
    w = (codes - zeros[gidx]) * scales[gidx]                  # [in, out]
    return w.T.copy()


def rope_inv_freq(cfg, hd):
    theta = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return inv / rs["factor"]
    if kind != "llama3":
        sys.exit("ref_kl.py: rope_scaling %s is not implemented here" % kind)
    f, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    wl = 2 * math.pi / inv
    out = np.where(wl > old / lo, inv / f, inv)
    smooth = (old / wl - lo) / (hi - lo)
    mid = (wl >= old / hi) & (wl <= old / lo)
    return np.where(mid, (1 - smooth) * inv / f + smooth * inv, out)


def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rotate(x, cos, sin):        # x [T, heads, hd], rotate-half
    h = x.shape[-1] // 2
    r = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
    return x * cos[:, None, :] + r * sin[:, None, :]


def forward(cfg, t, ids):
    """Logits [T, V] of one window, in float64."""
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    eps = float(cfg["rms_norm_eps"])
    T = len(ids)
    x = t["model.embed_tokens.weight"].astype(np.float64)[ids]
    ang = np.arange(T, dtype=np.float64)[:, None] * rope_inv_freq(cfg, hd)[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rmsnorm(x, t[p + "input_layernorm.weight"].astype(np.float64), eps)
        q = (h @ linear(cfg, t, p + "self_attn.q_proj").T).reshape(T, nh, hd)
        k = (h @ linear(cfg, t, p + "self_attn.k_proj").T).reshape(T, nkv, hd)
        v = (h @ linear(cfg, t, p + "self_attn.v_proj").T).reshape(T, nkv, hd)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        att = np.empty((T, nh, hd))
        for i in range(nh):
            j = i // (nh // nkv)
            s = q[:, i, :] @ k[:, j, :].T / math.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, i, :] = (s / s.sum(-1, keepdims=True)) @ v[:, j, :]
        x = x + att.reshape(T, nh * hd) @ linear(cfg, t, p + "self_attn.o_proj").T
        h = rmsnorm(x, t[p + "post_attention_layernorm.weight"].astype(np.float64), eps)
        g = h @ linear(cfg, t, p + "mlp.gate_proj").T
        u = h @ linear(cfg, t, p + "mlp.up_proj").T
        x = x + (g / (1 + np.exp(-g)) * u) @ linear(cfg, t, p + "mlp.down_proj").T
    x = rmsnorm(x, t["model.norm.weight"].astype(np.float64), eps)
    head = "lm_head" if "lm_head.weight" in t or "lm_head.qweight" in t else None
    W = linear(cfg, t, head) if head and not cfg.get("tie_word_embeddings") else t["model.embed_tokens.weight"].astype(np.float64)
    return x @ W.T


def log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))


def quantile(sorted_v, q):
    pos = q * (len(sorted_v) - 1)
    i = int(math.floor(pos))
    if i >= len(sorted_v) - 1:
        return float(sorted_v[-1])
    return float(sorted_v[i] + (pos - i) * (sorted_v[i + 1] - sorted_v[i]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--windows", type=int, default=0)
    ap.add_argument("--out")
    a = ap.parse_args()
    cb, tb = read_ckpt(a.base)
    cq, tq = read_ckpt(a.model)
    ids = np.fromfile(a.tokens, dtype="<u4").astype(np.int64)
    L = a.seq_len
    nw = len(ids) // L
    if a.windows:
        nw = min(nw, a.windows)
    nll, nllb, kl, dp, dpt, same, gap = [], [], [], [], [], 0, math.inf
    for w in range(nw):
        win = ids[w * L:(w + 1) * L]
        zb, zq = forward(cb, tb, win), forward(cq, tq, win)
        lb, lq = log_softmax(zb), log_softmax(zq)
        for t in range(L - 1):
            y = win[t + 1]
            nll.append(-lq[t, y]); nllb.append(-lb[t, y])
            pb = np.exp(lb[t])
            kl.append(float((pb * (lb[t] - lq[t])).sum()))
            top = int(np.argmax(zb[t]))
            same += top == int(np.argmax(zq[t]))
            dp.append(math.exp(lq[t, y]) - math.exp(lb[t, y]))
            dpt.append(math.exp(lq[t, top]) - math.exp(lb[t, top]))
            for z in (zb[t], zq[t]):
                s = np.sort(z)
                gap = min(gap, float(s[-1] - s[-2]))
    n = len(kl)
    ks = np.sort(np.array(kl))
    g = {
        "tokens": n, "windows": nw, "seq_len": L,
        "nll_mean": float(np.mean(nll)), "ppl": math.exp(np.mean(nll)),
        "nll_mean_base": float(np.mean(nllb)), "ppl_base": math.exp(np.mean(nllb)),
        "kl_mean": float(np.mean(kl)), "kl_median": quantile(ks, 0.5), "kl_p99": quantile(ks, 0.99),
        "kl_max": float(ks[-1]), "same_top": same / n, "same_top_count": same,
        "rms_dp": math.sqrt(float(np.mean(np.square(dp)))), "rms_dp_top": math.sqrt(float(np.mean(np.square(dpt)))),
        "min_top2_gap": gap,
        "made_by": "tools/ref_kl.py (numpy float64 forward, independent of forge-stream)",
    }
    js = json.dumps(g, indent=1)
    print(js)
    if a.out:
        open(a.out, "w").write(js + "\n")


if __name__ == "__main__":
    main()
