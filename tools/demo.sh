#!/bin/sh
# demo.sh: `make demo`: quantize the real stories260K model (../shared/data) to
# 4 bits with GPTQ, calibrated on the start of WikiText-2, and with the RTN
# baseline through the same pipeline; then evaluate the original, RTN and GPTQ
# checkpoints on held-out WikiText-2 windows and print the perplexities.  GPTQ
# once more calibrated from the raw text (--calib-text: the model's own
# tokenizer.json, spec §18), evaluated on the same held-out windows.
set -e
SHARED=${1:-../shared}
MODEL=$SHARED/data/stories260K
TOKENS=$SHARED/data/wikitext2/wiki.test.stories260K.u32
TEXT=$SHARED/data/wikitext2/wiki.test.raw
OUT=build/demo
SAMPLES=64
SEQ=256
HELD_OUT=$((SAMPLES * SEQ))     # eval starts after the calibration tokens
WINDOWS=300
BIN=bin/forge-stream
rm -rf $OUT && mkdir -p $OUT
echo "== quantize $MODEL: 4-bit, group 32, calibration $SAMPLES x $SEQ tokens"
$BIN quantize --model $MODEL --out $OUT/gptq --calib $TOKENS --samples $SAMPLES --seq-len $SEQ \
    --bits 4 --group-size 32 --act-order
$BIN quantize --model $MODEL --out $OUT/rtn --calib $TOKENS --samples $SAMPLES --seq-len $SEQ \
    --bits 4 --group-size 32 --method rtn --quiet
echo "== quantize from text: --calib-text $TEXT (the first $SAMPLES x $SEQ tokens of its ids)"
$BIN quantize --model $MODEL --out $OUT/gptq-text --calib-text $TEXT --samples $SAMPLES --seq-len $SEQ \
    --bits 4 --group-size 32 --act-order --quiet
echo "== eval: $WINDOWS held-out windows of 512 tokens (after the first $HELD_OUT tokens)"
ppl() {
    $BIN eval --model "$1" --tokens $TOKENS --skip-tokens $HELD_OUT --max-windows $WINDOWS --json --quiet |
        sed -n 's/.*"ppl": \([0-9.]*\).*/\1/p'
}
P0=$(ppl $MODEL)
P1=$(ppl $OUT/rtn)
P2=$(ppl $OUT/gptq)
P3=$(ppl $OUT/gptq-text)
echo
printf '%-34s %10s %10s\n' "model" "PPL" "vs F32"
awk -v a="$P0" -v b="$P1" -v c="$P2" -v d="$P3" 'BEGIN {
    printf "%-34s %10.3f %9.2f%%\n", "stories260K F32 (original)", a, 0
    printf "%-34s %10.3f %9.2f%%\n", "RTN 4-bit g32", b, 100 * (b / a - 1)
    printf "%-34s %10.3f %9.2f%%\n", "GPTQ 4-bit g32 act-order", c, 100 * (c / a - 1)
    printf "%-34s %10.3f %9.2f%%\n", "  the same, --calib-text raw text", d, 100 * (d / a - 1)
}'
echo
$BIN inspect $OUT/gptq --verify | tail -3
