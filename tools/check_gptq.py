#!/usr/bin/env python3
"""check_gptq.py: an outside check of `--format gptq` output (numpy only).

Unpacks every quantized linear of a gptq checkpoint folder the way AutoGPTQ's
v1 format defines it (qweight: codes along the input dimension as a
little-endian bit stream in int32 words; qzeros: zero - 1 along the output
dimension; scales F16; g_idx), and compares it bit for bit with
`forge-stream inspect --dequant`, and with the original weight (relative
error).  usage: tools/check_gptq.py QUANT_DIR ORIG_DIR [--bin bin/forge-stream]
"""
import json, os, struct, subprocess, sys, tempfile
import numpy as np

def read_folder(d):
    files = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    out = {}
    for f in files:
        raw = open(os.path.join(d, f), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        hdr = json.loads(raw[8:8 + n])
        for k, v in hdr.items():
            if k == "__metadata__": continue
            b, e = v["data_offsets"]
            dt = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I32": np.int32, "U8": np.uint8,
                  "F8_E4M3": np.uint8}[v["dtype"]]
            a = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=dt).reshape(v["shape"])
            if v["dtype"] == "BF16": a = (a.astype(np.uint32) << 16).view(np.float32)
            out[k] = a
    return out

def bitstream_unpack(words, count, bits):
    """words [W, C] int32 -> codes [count, C], little-endian stream per column."""
    w = words.astype(np.uint32).astype(np.uint64)
    out = np.zeros((count, w.shape[1]), dtype=np.int64)
    for i in range(count):
        b0 = i * bits
        wi, off = divmod(b0, 32)
        v = w[wi] >> np.uint64(off)
        if off + bits > 32: v |= w[wi + 1] << np.uint64(32 - off)
        out[i] = (v & np.uint64((1 << bits) - 1)).astype(np.int64)
    return out

def main():
    qdir, odir = sys.argv[1], sys.argv[2]
    binp = sys.argv[sys.argv.index("--bin") + 1] if "--bin" in sys.argv else "bin/forge-stream"
    qc = json.load(open(os.path.join(qdir, "config.json")))["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc.get("checkpoint_format", "gptq") == "gptq"
    bits = qc["bits"]
    q, o = read_folder(qdir), read_folder(odir)
    tmp = tempfile.mkdtemp(); fails = 0; n = 0
    for name in sorted(k[:-8] for k in q if k.endswith(".qweight")):
        g_idx = q[name + ".g_idx"]; scales = q[name + ".scales"].astype(np.float32)
        cin = g_idx.shape[0]; cout = scales.shape[1]
        codes = bitstream_unpack(q[name + ".qweight"], cin, bits)            # [in, out]
        zeros = bitstream_unpack(q[name + ".qzeros"].T, cout, bits).T + 1    # [groups, out]
        W = ((codes.T.astype(np.float32) - zeros[g_idx].T.astype(np.float32)) * scales[g_idx].T).astype(np.float32)
        f = os.path.join(tmp, "d.safetensors")
        subprocess.run([binp, "inspect", qdir, "--dequant", name, "--out", f], check=True, capture_output=True)
        ours = read_folder(tmp)["weight"]; os.unlink(f)
        exact = np.array_equal(W.view(np.uint32), ours.view(np.uint32))
        orig = o[name + ".weight"].astype(np.float32)
        rel = float(np.linalg.norm(W - orig) / np.linalg.norm(orig))
        ok = exact and rel < 0.5
        fails += not ok; n += 1
        print("ok  " if ok else "FAIL", f"{name:50s} [{cout}, {cin}] exact={exact} rel.err={rel:.4f}")
    print(f"{n} linears, {fails} failed"); sys.exit(1 if fails or not n else 0)

if __name__ == "__main__":
    main()
