#!/bin/sh
# demo.sh: `make demo`.  Until the streaming pipeline lands, the demo runs
# `forge-stream layer` on a real layer: q_proj of stories260K's decoder layer 0,
# with its Hessian built from the normalised embeddings of 8192 real
# WikiText-2 tokens, at several settings, and prints loss against RTN.
set -e
SHARED=${1:-../shared}
MODEL=$SHARED/data/stories260K/model.safetensors
TOKENS=$SHARED/data/wikitext2/wiki.test.stories260K.u32
OUT=build/demo
mkdir -p $OUT
build/demo-input "$MODEL" "$TOKENS" 8192 self_attn.q_proj $OUT/in.safetensors
printf '\n%-34s %12s %12s %8s %8s\n' "setting" "gptq loss" "rtn loss" "ratio" "seconds"
run() {
    name=$1; shift
    bin/forge-stream layer --quiet --in $OUT/in.safetensors --out $OUT/out.safetensors \
        --report $OUT/report.json "$@" > /dev/null
    # the report is JSON written by forge-stream; pick the numbers with sed
    loss=$(sed -n 's/^  "loss": \(.*\),$/\1/p' $OUT/report.json)
    rtn=$(sed -n 's/^  "rtn_loss": \(.*\),$/\1/p' $OUT/report.json)
    secs=$(sed -n 's/^  "seconds": \(.*\),$/\1/p' $OUT/report.json)
    awk -v n="$name" -v l="$loss" -v r="$rtn" -v s="$secs" \
        'BEGIN { printf "%-34s %12.5g %12.5g %8.3f %8.4f\n", n, l, r, l / r, s }'
}
run "4-bit g32 sym absmax"              --bits 4 --group-size 32 --sym
run "4-bit g32 asym mse act-order"      --bits 4 --group-size 32 --asym --grid mse --act-order
run "3-bit g32 sym"                     --bits 3 --group-size 32
run "2-bit g32 asym mse static"         --bits 2 --group-size 32 --asym --grid mse --static-groups
run "8-bit per row"                     --bits 8 --group-size -1
echo
echo "last report ($OUT/report.json):"
cat $OUT/report.json
