#!/bin/sh
# bench-tokenizer.sh: the tokenizer's speed on English text (part of `make
# bench`): MB/s of WikiText-2's test text (1.29 MB) on one core for each
# tokenizer of tests/data/tok, and, when Python's `tokenizers` library
# imports (PYTHON, default build/tokvenv/bin/python else python3), its MB/s
# on the same text and the ratio (ours / theirs) in the same run.
set -e
SHARED=${1:-../shared}
TEXT=$SHARED/data/wikitext2/wiki.test.raw
D=build/bench-tok-data
mkdir -p $D
PY=${PYTHON:-build/tokvenv/bin/python}
[ -x "$PY" ] || PY=python3
HF=0
"$PY" -c "import tokenizers" 2>/dev/null && HF=1
printf "| %-12s | %-18s | %8s | %9s | %12s | %6s |\n" tokenizer kind ids "MB/s" "tokenizers" ratio
printf "|--------------|--------------------|----------|-----------|--------------|--------|\n"
for name in stories260K smollm2 qwen2 llama3 llama2; do
    if [ $name = stories260K ]; then dir=$SHARED/data/stories260K; kind="SentencePiece BPE"
    else
        dir=$D/$name
        mkdir -p $dir
        [ -f $dir/tokenizer.json ] || xz -dc tests/data/tok/$name/tokenizer.json.xz > $dir/tokenizer.json
        cp tests/data/tok/$name/tokenizer_config.json $dir/
        kind="byte-level BPE"; [ $name = llama2 ] && kind="SentencePiece BPE"
    fi
    set -- $(taskset -c 0 ${BENCH_TOK:-build/bench-tok} $dir $TEXT)
    ids=$1 ours=$2
    if [ $HF = 1 ]; then
        set -- $(taskset -c 0 "$PY" tools/bench-tok-hf.py $dir $TEXT)
        theirs=$2
        ratio=$(awk "BEGIN { printf \"%.2f\", $ours / $theirs }")
        [ "$1" = "$ids" ] || ratio="$ratio (ids differ!)"
    else theirs="-"; ratio="-"; fi
    printf "| %-12s | %-18s | %8s | %9s | %12s | %6s |\n" $name "$kind" $ids $ours $theirs "$ratio"
done
[ $HF = 1 ] || echo "(Python's tokenizers library not found: no ratio; pip install tokenizers to get it)"
