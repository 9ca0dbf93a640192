#!/usr/bin/env python3
"""make-tok-synthetic.py: small tokenizer.json files that use the options the
real ones of tests/data/tok do not (for tools/make-tok-goldens.py), trained
by the tokenizers library on SHARED/wikitext2/wiki.test.raw's first 300 kB:

  synth-sp:  NFKC, Replace (regex), Lowercase, Strip; Metaspace (prepend
             always, split); byte fallback, fused unknowns; added tokens
             with lstrip/rstrip, single_word, normalized
  synth-bl:  NFC; Split (string, MergedWithPrevious), Digits (runs), Split
             (regex, Contiguous), Split (regex, MergedWithNext), ByteLevel
             (add_prefix_space, GPT-2 regex); ignore_merges; added tokens
  synth-rm:  NFD, Prepend; Split (regex, Removed, invert), Digits
             (individual), Metaspace (always, no split); no byte fallback,
             an unknown token not fused

    build/tokvenv/bin/python tools/make-tok-synthetic.py SHARED/data OUTDIR
writes OUTDIR/NAME/{tokenizer.json, tokenizer_config.json}.
"""
import json, os, sys

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers as nm, pre_tokenizers as pt, trainers

shared, outdir = sys.argv[1], sys.argv[2]
wiki = open(os.path.join(shared, "wikitext2", "wiki.test.raw"), encoding="utf-8").read()[:300000]
byte_tokens = ["<0x%02X>" % b for b in range(256)]


def save(t, name, cfg):
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    t.save(os.path.join(d, "tokenizer.json"))
    json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"))


t = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
t.normalizer = nm.Sequence([nm.NFKC(), nm.Replace(Regex(" {2,}"), " "), nm.Lowercase(), nm.Strip(left=False, right=True)])
t.pre_tokenizer = pt.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
t.train_from_iterator([wiki], trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                                  show_progress=False))
t.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True), AddedToken("[SEP]", single_word=True)])
t.add_tokens([AddedToken("hello world", normalized=True), AddedToken("Ünïcode", normalized=False)])
save(t, "synth-sp", {"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>"})

t = Tokenizer(models.BPE(ignore_merges=True))
t.normalizer = nm.NFC()
t.pre_tokenizer = pt.Sequence([pt.Split("\n", "merged_with_previous"), pt.Digits(individual_digits=False),
                               pt.Split(Regex(r"[.,;:!?]+"), "contiguous"), pt.Split(Regex(r"\s+"), "merged_with_next"),
                               pt.ByteLevel(add_prefix_space=True, use_regex=True)])
t.train_from_iterator([wiki], trainers.BpeTrainer(vocab_size=800, initial_alphabet=pt.ByteLevel.alphabet(), show_progress=False))
t.add_special_tokens([AddedToken("<|eot|>", rstrip=True), AddedToken("<tool>", lstrip=True)])
t.add_tokens([AddedToken(" ok ", normalized=True)])
save(t, "synth-bl", {"eos_token": "<|eot|>"})

t = Tokenizer(models.BPE(unk_token="[UNK]", fuse_unk=False))
t.normalizer = nm.Sequence([nm.NFD(), nm.Prepend("»")])
t.pre_tokenizer = pt.Sequence([pt.Split(Regex(r"[\p{L}\p{N}\s»]+"), "removed", invert=True), pt.Digits(individual_digits=True),
                               pt.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)])
t.train_from_iterator([wiki], trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]"], show_progress=False,
                                                  limit_alphabet=60))
t.add_special_tokens([AddedToken("<eos>")])
save(t, "synth-rm", {"eos_token": "<eos>", "add_bos_token": False})
