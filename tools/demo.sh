#!/bin/sh
# demo.sh: `make demo`: quantize the real stories260K model (../shared/data) to
# 4 bits with GPTQ, calibrated on the start of WikiText-2, and with the RTN
# baseline through the same pipeline; then evaluate the original, RTN and GPTQ
# checkpoints on held-out WikiText-2 windows and print the perplexities, with
# each quantized model's KL divergence from the original and top-1 agreement
# (eval --base, spec §11.2).  GPTQ once more calibrated from the raw text
# (--calib-text: the model's own tokenizer.json, spec §18), evaluated on the
# same held-out windows.
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
echo "== eval: $WINDOWS held-out windows of 512 tokens (after the first $HELD_OUT tokens), each against the F32 original (--base)"
# one eval --base per quantized model: its PPL, the original's, KL(original || it) and top-1 agreement
kl() {
    $BIN eval --model "$1" --base $MODEL --tokens $TOKENS --skip-tokens $HELD_OUT --max-windows $WINDOWS --json --quiet
}
field() { sed -n "s/.*\"$1\": \([-0-9.e]*\).*/\1/p"; }
J1=$(kl $OUT/rtn)
J2=$(kl $OUT/gptq)
J3=$(kl $OUT/gptq-text)
P0=$(echo "$J2" | field ppl_base)
echo
printf '%-34s %9s %8s %10s %9s %8s %8s\n' "model" "PPL" "vs F32" "KL mean" "KL p99" "top-1" "RMS dp"
printf '%-34s %9.3f %7.2f%% %10s %9s %8s %8s\n' "stories260K F32 (original)" "$P0" 0 - - - -
row() {
    echo "$2" | awk -v name="$1" -v a="$P0" '{
        p = $0; sub(/.*"ppl": /, "", p); sub(/,.*/, "", p)
        k = $0; sub(/.*"kl_mean": /, "", k); sub(/,.*/, "", k)
        q = $0; sub(/.*"kl_p99": /, "", q); sub(/,.*/, "", q)
        s = $0; sub(/.*"same_top": /, "", s); sub(/,.*/, "", s)
        d = $0; sub(/.*"rms_dp": /, "", d); sub(/,.*/, "", d)
        printf "%-34s %9.3f %7.2f%% %10.5f %9.4f %7.2f%% %7.3f%%\n", name, p, 100 * (p / a - 1), k, q, 100 * s, 100 * d
    }'
}
row "RTN 4-bit g32" "$J1"
row "GPTQ 4-bit g32 act-order" "$J2"
row "  the same, --calib-text raw text" "$J3"
echo "(KL: mean / 99th percentile of KL(original || quantized) per token, nats; top-1: tokens whose top"
echo " token agrees with the original's; RMS dp: of p(next token) quantized - original, as llama.cpp's)"
echo
$BIN inspect $OUT/gptq --verify | tail -3
