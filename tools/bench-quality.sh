#!/bin/sh
# bench-quality.sh: `make bench-quality`: perplexity of each quantization
# method at the same bits and format (issue 18), on stories260K (../shared/data)
# and, when tools/smollm2-prep.sh has prepared it (build/smollm2), on the real
# SmolLM2-135M.  Calibration is the start of the token file, evaluation the
# windows after it (disjoint).  Prints PPL, the gap to F32 and the quantize
# time as a ratio to plain GPTQ's.  Not part of `make test`: minutes on 2 cores.
# Knobs (environment): METHODS, CONFIGS ("bits:group ..."), STORIES_WINDOWS,
# SKIP_STORIES=1, SKIP_SMOL=1, and for SmolLM2 SMOL_METHODS, SMOL_CONFIGS, SMOL_SAMPLES, SMOL_WINDOWS.
set -e
SHARED=${1:-../shared}
BIN=bin/forge-stream
OUT=build/bench-quality
mkdir -p $OUT
METHODS=${METHODS:-"gptq mse refine1 refine3 hmse hmse-diag hmse+refine3 mse+refine3"}
CONFIGS=${CONFIGS:-"4:64 4:128 3:64"}

flags() {
    case $1 in
        gptq) echo "" ;;
        mse) echo "--grid mse --grid-norm 2" ;;
        refine1) echo "--refine-scales 1" ;;
        refine3) echo "--refine-scales 3" ;;
        hmse) echo "--grid hmse" ;;
        hmse-diag) echo "--grid hmse --hmse-weight diag" ;;
        hmse+refine3) echo "--grid hmse --refine-scales 3" ;;
        mse+refine3) echo "--grid mse --grid-norm 2 --refine-scales 3" ;;
        best) echo "--preset best" ;;
        *) echo "unknown method $1" >&2; exit 2 ;;
    esac
}

now() { date +%s.%N; }

# bench NAME MODEL TOKENS SAMPLES SEQ WINDOWS
bench() {
    name=$1 model=$2 tokens=$3 samples=$4 seq=$5 windows=$6
    skip=$((samples * seq))
    ppl() {
        $BIN eval --model "$1" --tokens $tokens --skip-tokens $skip --max-windows $windows --json --quiet |
            sed -n 's/.*"ppl": \([0-9.]*\).*/\1/p'
    }
    f32=$(ppl $model)
    echo
    echo "== $name: calibration $samples x $seq tokens, eval $windows windows of 512 after them"
    printf '%-10s %-14s %10s %9s %10s %9s\n' config method PPL "vs F32" "gap cut" "time x"
    printf '%-10s %-14s %10.3f\n' "" "F32" "$f32"
    for cfg in $CONFIGS; do
        bits=${cfg%%:*} g=${cfg##*:}
        base_ppl="" base_t=""
        for m in $METHODS; do
            d=$OUT/$name-$bits-$g-$m
            t0=$(now)
            $BIN quantize --model $model --out $d --calib $tokens --samples $samples --seq-len $seq \
                --bits $bits --group-size $g --sym --act-order --overwrite --quiet $(flags $m)
            t1=$(now)
            p=$(ppl $d)
            t=$(echo "$t1 - $t0" | bc)
            [ -z "$base_ppl" ] && base_ppl=$p base_t=$t
            awk -v c="$bits-bit g$g" -v m="$m" -v p="$p" -v f="$f32" -v b="$base_ppl" -v t="$t" -v bt="$base_t" 'BEGIN {
                cut = (b - f) != 0 ? 100 * (1 - (p - f) / (b - f)) : 0
                printf "%-10s %-14s %10.3f %8.2f%% %9.1f%% %9.2f\n", c, m, p, 100 * (p / f - 1), cut, t / bt }'
            rm -rf $d
        done
    done
}

if [ -z "$SKIP_STORIES" ]; then
bench stories260K $SHARED/data/stories260K $SHARED/data/wikitext2/wiki.test.stories260K.u32 128 256 ${STORIES_WINDOWS:-400}
fi
METHODS=${SMOL_METHODS:-$METHODS}
CONFIGS=${SMOL_CONFIGS:-$CONFIGS}
if [ -n "$SKIP_SMOL" ]; then
    :
elif [ -f build/smollm2/model/config.json ]; then
    bench SmolLM2-135M build/smollm2/model build/smollm2/wiki.test.u32 ${SMOL_SAMPLES:-64} 512 ${SMOL_WINDOWS:-100}
else
    echo
    echo "(SmolLM2-135M skipped: run sh tools/smollm2-prep.sh first, which needs PyPI)"
fi
