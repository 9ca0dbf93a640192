#!/usr/bin/env python3
"""make-tok-goldens.py: golden token ids from the Hugging Face `tokenizers`
library, made once, for tests/check_tokenizer.c (which needs no Python).

    python3 -m venv build/tokvenv && build/tokvenv/bin/pip install tokenizers
    build/tokvenv/bin/python tools/make-tok-goldens.py --shared ../shared/data \
        --fixture stories260K=../shared/data/stories260K \
        --fixture smollm2=DIR --fixture qwen2=DIR --fixture llama3=DIR --fixture llama2=DIR

For each NAME=DIR it writes tests/data/tok/NAME/golden.jsonl: one line per
corpus document, {"name", "hex" (the document's bytes), "ids"} with ids =
Tokenizer.encode(text, add_special_tokens=False).ids where text is the bytes
decoded as bytes.decode("utf-8", "replace") (the repair forge-stream
applies, spec §16.2); and a last line {"name": "wikitext2", "n", "fnv1a64"}:
the count and FNV-1a 64 hash (of the ids' little-endian bytes) of the ids
of the whole of SHARED/wikitext2/wiki.test.raw.  Unless DIR is the shared
stories260K folder, DIR/tokenizer.json is copied in xz-compressed (and
DIR/tokenizer_config.json as is).

The corpus: English prose, code, numbers, whitespace runs, CJK, emoji,
combining marks, compatibility characters, invalid UTF-8, and every added
token of the tokenizer inside text.
"""
import argparse, json, lzma, os, shutil, sys

from tokenizers import Tokenizer

CORPUS = [
    ("prose", "The quick brown fox jumps over the lazy dog. It wasn't the fox's fault; they'd said "
              "they'll come, and we've waited. I'm sure you're right: DON'T SHOUT, it's 'quoted'.\n"
              "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun."),
    ("code_c", "int main(int argc, char **argv)\n{\n\tfor (int i = 0; i < argc; i++) {\n\t\tprintf(\"%s\\n\", argv[i]);\n"
               "\t}\n\treturn x->y[3] >= 0 && (z | 0xFF) != ~0u ? 1 : -1; // comment\n}\n"),
    ("code_py", "def f(x, *args, **kw):\n    \"\"\"Docstring.\"\"\"\n    return [y ** 2 for y in range(10) if y % 3 == 0]\n\n\n"
                "class A(B):\n        pass  # eight spaces\n"),
    ("numbers", "1 12 123 1234 12345 123456 3.14159 -2.5e-10 1,000,000 0x1F 007 2024-12-04 10:30 "
                "١٢٣ ½ ² Ⅻ ① 10⁶ 1st 2nd"),
    ("spaces", "a  b   c    d\t\te\n\nf\r\ng \n \n  h   \n\n\n   i\u00a0j\u2003k\u3000l \u180e m\u2028n\u0085o   "),
    ("lead_space", "   leading and trailing spaces   "),
    ("only_spaces", "     "),
    ("newlines", "\n\n\n"),
    ("cjk", "我爱北京天安门。日本語のテキストです。カタカナとひらがな。한국어 텍스트입니다. 中文，标点！"),
    ("emoji", "hi 👋🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 ❤️ 🙂🙃 ✨ 🧑‍💻 end"),
    ("combining", "cafe\u0301 re\u0301sume\u0301 Ångström A\u030angstro\u0308m \u1100\u1161\u11a8 "
                  "tiếng Việt Cửa Việt z\u0335\u0321a\u0336l\u0334g\u0337o\u0338"),
    ("compat", "ﬁne ﬂow ＡＢＣ１２３ ｶﾀｶﾅ ㈱ ㎏ ℌ Ⅸ ⁵ ＂quoted＂"),
    ("mixed", "Ελληνικά Русский текст العربية עברית हिन्दी ไทย İstanbul ΟΔΟΣ ǅungla ẞ ǱZ ΣΑΣ."),
    ("symbols", "!!! ??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}} <<< >>> ||| ~~~ ``` '''"),
    ("apostrophes", "it's IT'S it’s 's 't 're 've 'm 'll 'd 'S 'T 'RE"),
    ("url", "https://example.com/path?q=1&r=two#frag user@example.org C:\\Windows\\System32"),
    ("nul", "before\x00after\x01\x02\x7f"),
    ("long_word", "a" * 300 + " " + "ab" * 150 + " supercalifragilisticexpialidocious" * 3),
    ("empty", ""),
    ("single", "x"),
]

INVALID = [
    ("invalid_cont", b"abc \x80 def \xbf\xbf"),
    ("invalid_trunc", b"trunc \xe2\x82 and \xf0\x9f\x98 end \xc3"),
    ("invalid_overlong", b"overlong \xc0\xaf \xe0\x80\xaf \xf0\x80\x80\xaf"),
    ("invalid_surrogate", b"surrogate \xed\xa0\x80\xed\xbf\xbf x"),
    ("invalid_high", b"high \xf4\x90\x80\x80 \xf5\xff\xfe done"),
    ("invalid_mixed", "ok é ".encode() + b"\xe9" + " 我".encode() + b"\xe6\x88" + " 👋".encode()),
]


def added_doc(tok):
    """Every added token, with text on both sides, adjacent ones, one at the start."""
    toks = [a.content for a in tok.get_added_tokens_decoder().values()]
    parts = [toks[0] if toks else ""]
    for i, c in enumerate(toks):
        parts.append(f"word{i} {c} x{c}{c} \n")
    return ("added_all", "".join(parts))


def fnv1a64(ids):
    h = 0xcbf29ce484222325
    for i in ids:
        for b in i.to_bytes(4, "little"):
            h ^= b
            h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", required=True)
    ap.add_argument("--fixture", action="append", default=[])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tok"))
    a = ap.parse_args()
    wiki = open(os.path.join(a.shared, "wikitext2", "wiki.test.raw"), "rb").read().decode("utf-8", "replace")
    for spec in a.fixture:
        name, d = spec.split("=", 1)
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        out = os.path.join(a.out, name)
        os.makedirs(out, exist_ok=True)
        if os.path.realpath(d) != os.path.realpath(os.path.join(a.shared, "stories260K")):
            with open(os.path.join(d, "tokenizer.json"), "rb") as f, lzma.open(os.path.join(out, "tokenizer.json.xz"), "wb",
                                                                              preset=9 | lzma.PRESET_EXTREME) as g:
                shutil.copyfileobj(f, g)
            shutil.copy(os.path.join(d, "tokenizer_config.json"), out)
        docs = [(n, s.encode("utf-8")) for n, s in CORPUS + [added_doc(tok)]] + INVALID
        total = 0
        with open(os.path.join(out, "golden.jsonl"), "w") as f:
            for n, b in docs:
                ids = tok.encode(b.decode("utf-8", "replace"), add_special_tokens=False).ids
                total += len(b)
                f.write(json.dumps({"name": n, "hex": b.hex(), "ids": ids}) + "\n")
            ids = tok.encode(wiki, add_special_tokens=False).ids
            f.write(json.dumps({"name": "wikitext2", "n": len(ids), "fnv1a64": "%016x" % fnv1a64(ids)}) + "\n")
        print(f"{name}: {len(docs)} documents ({total} bytes), wikitext2 {len(ids)} ids", file=sys.stderr)


if __name__ == "__main__":
    main()
