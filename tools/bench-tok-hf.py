#!/usr/bin/env python3
"""bench-tok-hf.py: the Hugging Face tokenizers library on the same text and
tokenizer as tools/bench-tok.c (one thread, best of 3 after a warm-up):
prints "ids MB/s".  Optional: make bench runs it when `tokenizers` imports."""
import os, sys, time
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
from tokenizers import Tokenizer

t = Tokenizer.from_file(os.path.join(sys.argv[1], "tokenizer.json"))
text = open(sys.argv[2], "rb").read().decode("utf-8", "replace")
nbytes = os.path.getsize(sys.argv[2])
best, n = 1e30, 0
for r in range(4):
    s = time.perf_counter()
    n = len(t.encode(text, add_special_tokens=False).ids)
    s = time.perf_counter() - s
    if r > 0:
        best = min(best, s)
print(n, "%.2f" % (nbytes / best / 1e6))
