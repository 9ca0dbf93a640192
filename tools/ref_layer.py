#!/usr/bin/env python3
"""ref_layer.py: an outside check of `forge-stream layer` (numpy only).

Makes layers the binary has not seen (F32/BF16/F16 weights, Hessians or raw
inputs, rank-deficient H, in not a multiple of the group size), runs the
command, and checks, with code independent of the project:
  * dequant == (qweight - zero) * 2^(code/256), bit for bit, from qmeta4;
  * the reported loss equals trace((W-D) H (W-D)^T) computed here;
  * the loss is below the RTN loss and within 2% of (or below) a textbook
    GPTQ (Frantar et al.'s reference algorithm, ported to numpy here); the
    same reference with its scales rounded through Q8.8 (as qmeta4 stores
    them) is printed too: forge-stream matches that one to 1e-4.
Also feeds bad input and expects exit 2, a message and no OUT file.

usage: tools/ref_layer.py [--bin bin/forge-stream] [--seed N]
"""
import argparse, json, os, struct, subprocess, sys, tempfile
import numpy as np

DT = {"F32": (np.float32, 4), "F16": (np.float16, 2), "U8": (np.uint8, 1), "I32": (np.int32, 4)}

def to_bf16_bytes(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16).tobytes()

def from_bf16(b, shape):
    u = np.frombuffer(b, dtype=np.uint16).astype(np.uint32) << 16
    return u.view(np.float32).reshape(shape)

def write_st(path, tensors):
    hdr, blobs, off = {}, [], 0
    for name, (dt, arr) in tensors.items():
        if dt == "BF16":
            data = to_bf16_bytes(arr)
        else:
            data = np.ascontiguousarray(arr, dtype=DT[dt][0]).tobytes()
        hdr[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data); off += len(data)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)

def read_st(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n]); base = 8 + n; out = {}
    for k, v in hdr.items():
        if k == "__metadata__": continue
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(raw[base + b:base + e], dtype=DT[v["dtype"]][0]).reshape(v["shape"])
    return out

# ---- textbook GPTQ (numpy port of the reference algorithm) ------------------
Q88 = False   # round the reference's scales through Q8.8 as qmeta4 stores them

def find_params(x, bits, sym, mse, shrink=0.2, grid=100, norm=2.4):
    s, z, m = find_params_raw(x, bits, sym, mse, shrink, grid, norm)
    if Q88:
        s = np.exp2(np.rint(np.log2(np.maximum(s, 1e-20)) * 256) / 256)
    return s, z, m

def find_params_raw(x, bits, sym, mse, shrink=0.2, grid=100, norm=2.4):
    maxq = 2 ** bits - 1
    xmin = np.minimum(x.min(1), 0); xmax = np.maximum(x.max(1), 0)
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax); xmin = np.where(xmin < 0, -xmax, xmin)
    z0 = (xmin == 0) & (xmax == 0); xmin[z0] = -1; xmax[z0] = 1
    scale = (xmax - xmin) / maxq
    zero = np.full_like(scale, (maxq + 1) / 2) if sym else np.round(-xmin / scale)
    if mse:
        best = np.full(x.shape[0], np.inf)
        for i in range(int(grid)):
            p = 1 - i / grid
            if p < shrink: break
            xmin1, xmax1 = p * xmin, p * xmax
            s1 = (xmax1 - xmin1) / maxq
            z1 = zero if sym else np.round(-xmin1 / s1)
            q = np.clip(np.round(x / s1[:, None]) + z1[:, None], 0, maxq)
            err = (np.abs(s1[:, None] * (q - z1[:, None]) - x) ** norm).sum(1)
            m = err < best; best[m] = err[m]; scale[m] = s1[m]; zero[m] = z1[m]
    return scale, zero, maxq

def quant(x, s, z, maxq):
    return s * (np.clip(np.round(x / s + z), 0, maxq) - z)

def gptq_ref(W, H, bits, gs, sym, mse, act, static, block=128, damp=0.01):
    W = W.astype(np.float64).copy(); H = H.astype(np.float64).copy()
    rows, cols = W.shape
    dead = np.diag(H) == 0; H[dead, dead] = 1; W[:, dead] = 0
    gs = cols if gs == -1 or gs >= cols else gs
    groups = []
    if static:
        for g in range(0, cols, gs): groups.append(find_params(W[:, g:g + gs], bits, sym, mse))
    perm = np.argsort(-np.diag(H), kind="stable") if act else np.arange(cols)
    W = W[:, perm]; H = H[perm][:, perm]
    H[np.diag_indices(cols)] += damp * np.mean(np.diag(H))
    Hinv = np.linalg.cholesky(np.linalg.inv(H)).T
    Q = np.zeros_like(W); cur = None
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols); W1 = W[:, i1:i2].copy(); E1 = np.zeros_like(W1)
        for i in range(i2 - i1):
            c = i1 + i
            if static:
                s, z, mq = groups[perm[c] // gs]
            elif c % gs == 0:
                cur = find_params(np.concatenate([W1[:, i:], W[:, i2:]], 1)[:, :min(gs, cols - c)], bits, sym, mse)
            if not static: s, z, mq = cur
            q = quant(W1[:, i], s, z, mq); Q[:, c] = q
            e = (W1[:, i] - q) / Hinv[c, c]
            W1[:, i:] -= np.outer(e, Hinv[c, c:i2]); E1[:, i] = e
        W[:, i2:] -= E1 @ Hinv[i1:i2, i2:]
    out = np.empty_like(Q); out[:, perm] = Q
    return out

def loss(W, D, H):
    E = W.astype(np.float64) - D.astype(np.float64)
    return float(np.einsum("ij,jk,ik->", E, H.astype(np.float64), E))

def decode(out, gs, act, static):
    qw, qm = out["qweight"], out["qmeta"]; rows, cols = qw.shape
    gs = cols if gs == -1 or gs >= cols else gs
    code = (qm[:, :, 0].astype(np.int32) | (qm[:, :, 1].astype(np.int32) << 8)).astype(np.int16)
    scale = np.exp2(code.astype(np.float64) / 256.0).astype(np.float32)
    zero = qm[:, :, 2].astype(np.float32)
    gidx = np.arange(cols) // gs
    if act and not static:
        gidx = np.empty(cols, dtype=np.int64); gidx[out["perm"]] = np.arange(cols) // gs
    return (qw.astype(np.float32) - zero[:, gidx]) * scale[:, gidx]

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--bin", default="bin/forge-stream")
    ap.add_argument("--seed", type=int, default=1); a = ap.parse_args()
    rng = np.random.default_rng(a.seed); tmp = tempfile.mkdtemp(); fails = 0
    cfgs = [("4-bit g128 sym absmax", ["--bits", "4", "--group-size", "128", "--sym"], 4, 128, 1, 0, 0, 0),
            ("4-bit g128 asym mse act-order", ["--bits", "4", "--group-size", "128", "--asym", "--grid", "mse", "--act-order"], 4, 128, 0, 1, 1, 0),
            ("3-bit g128", ["--bits", "3", "--group-size", "128"], 3, 128, 1, 0, 0, 0),
            ("8-bit per row", ["--bits", "8", "--group-size", "-1"], 8, -1, 1, 0, 0, 0),
            ("2-bit g64 asym mse static", ["--bits", "2", "--group-size", "64", "--asym", "--grid", "mse", "--static-groups"], 2, 64, 0, 1, 0, 1)]
    layers = [("F32", "hessian", 64, 300, False), ("BF16", "inputs", 48, 200, False),
              ("F16", "hessian", 40, 172, True), ("F32", "inputs", 32, 520, True)]
    for wdt, hsrc, rows, cols, deficient in layers:
        n = cols // 2 if deficient else 4 * cols
        X = (rng.standard_normal((n, cols)) @ (np.eye(cols) + 0.2 * rng.standard_normal((cols, cols)))).astype(np.float32)
        if deficient: X[:, 5] = 0
        W = (0.05 * rng.standard_normal((rows, cols))).astype(np.float32)
        if wdt == "BF16": W = from_bf16(to_bf16_bytes(W), W.shape)
        if wdt == "F16": W = W.astype(np.float16).astype(np.float32)
        Xs = from_bf16(to_bf16_bytes(X), X.shape) if hsrc == "inputs" else X
        H = Xs.astype(np.float64).T @ Xs.astype(np.float64)
        t = {"weight": (wdt, W)}
        t[hsrc] = ("BF16", X) if hsrc == "inputs" else ("F32", H.astype(np.float32))
        if hsrc == "hessian": H = H.astype(np.float32).astype(np.float64)
        inp = os.path.join(tmp, "in.safetensors"); write_st(inp, t)
        for name, flags, bits, gs, sym, mse, act, static in cfgs:
            outp = os.path.join(tmp, "out.safetensors")
            r = subprocess.run([a.bin, "layer", "--in", inp, "--out", outp, "--quiet"] + flags, capture_output=True, text=True)
            tag = f"{wdt}/{hsrc}/{rows}x{cols}{'/rank-def' if deficient else ''} {name}"
            if r.returncode != 0: print("FAIL", tag, r.stderr.strip()); fails += 1; continue
            rep = json.loads(r.stdout); out = read_st(outp); os.unlink(outp)
            D = decode(out, gs, act, static)
            exact = np.array_equal(D.view(np.uint32), out["dequant"].view(np.uint32))
            true = loss(W, out["dequant"], H)
            global Q88
            Q88 = False
            ref = loss(W, gptq_ref(W, H, bits, gs, sym, mse, act, static), H)
            Q88 = True
            refq = loss(W, gptq_ref(W, H, bits, gs, sym, mse, act, static), H)
            Q88 = False
            rel = abs(rep["loss"] - true) / true
            ok = exact and rel <= 1e-6 and rep["loss"] < rep["rtn_loss"] and (rep["loss"] <= 1.02 * ref or rep["loss"] <= 1.001 * refq)
            fails += not ok
            print("ok  " if ok else "FAIL", f"{tag:58s} loss/ref {rep['loss']/ref:.4f} loss/ref_q88 {rep['loss']/refq:.4f} loss/rtn {rep['loss']/rep['rtn_loss']:.3f} exact={exact} lossrel={rel:.0e}")
    # bad input: exit 2, one message, no OUT
    bad = [["--bits", "5"], ["--group-size", "48"], ["--grid-n", "0"], ["--grid-shrink", "0"], ["--grid-norm", "-1"], ["--block", "0"]]
    for flags in bad:
        outp = os.path.join(tmp, "bad.safetensors")
        r = subprocess.run([a.bin, "layer", "--in", inp, "--out", outp] + flags, capture_output=True, text=True)
        ok = r.returncode == 2 and "error" in r.stderr and not os.path.exists(outp)
        fails += not ok; print("ok  " if ok else "FAIL", "bad input", flags, r.returncode, r.stderr.strip())
    print(f"{fails} failed"); sys.exit(1 if fails else 0)

if __name__ == "__main__":
    main()
