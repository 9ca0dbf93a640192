#!/bin/sh
# bench-forward.sh: the layer forward on the backend ops (issue 14 §2-§3), ratios
# measured in one run (part of `make bench`):
#  1. the CPU path against the binary before the change (REV, default the commit
#     before src/forward/, built once into build/bench-before): quantize of a generated
#     Llama (4 layers, hidden 1024) and a Qwen3-MoE (2 layers, 8 experts), RUNS runs
#     each, the two binaries alternated; the median wall time and the median CPU time
#     (user + sys: less sensitive to other load on the machine) of each, and their
#     ratios new / before (the bound is 1.03); the outputs compared byte for byte;
#  2. the overlap on cpu-async: the same runs on --backend cpu-async against cpu (wall
#     ratio) and the pipeline's own line: the passes' time and the host's waits for its
#     staging slots (the rest is host work done while the backend computed).
# usage: sh tools/bench-forward.sh [SHARED [REV]]
set -e
SHARED=${1:-../shared}
REV=${2:-be704b8}
RUNS=${RUNS:-5}
MODELS=${MODELS:-llama moe}
TOK=$SHARED/data/wikitext2/wiki.test.stories260K.u32
D=build/bench-data/forward
BIN=bin/forge-stream
OLD=build/bench-before/bin/forge-stream
mkdir -p $D
if [ ! -x $OLD ]; then
    echo "building the binary before ($REV) into build/bench-before"
    rm -rf build/bench-before && mkdir -p build/bench-before
    git archive "$REV" | tar -x -C build/bench-before
    make -C build/bench-before -j2 bin/forge-stream > $D/before-build.log 2>&1
fi
[ -d $D/llama ] || build/gen-tiny --type llama --out $D/llama --layers 4 --hidden 1024 --intermediate 2816 \
    --heads 16 --vocab 512 > /dev/null
[ -d $D/moe ] || build/gen-tiny --type qwen3_moe --out $D/moe --layers 2 --hidden 512 --intermediate 1024 \
    --heads 8 --vocab 512 > /dev/null

# one quantize: prints "wall cpu" (seconds)
one() {
    rm -rf $D/out-$3
    /usr/bin/time -f "%e %U %S" -o $D/time.txt "$1" quantize --model $D/$2 --out $D/out-$3 --calib $TOK \
        --samples 8 --seq-len 256 $4 2> $D/log-$3.txt
    awk '{ printf "%s %.2f\n", $1, $2 + $3 }' $D/time.txt
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for m in $MODELS; do
    echo "== 1. $m: CPU path, binary before ($REV) vs now, $RUNS runs each, alternated"
    : > $D/old.txt; : > $D/new.txt; : > $D/async.txt
    i=0
    while [ $i -lt $RUNS ]; do
        one $OLD $m old "" >> $D/old.txt
        one $BIN $m new "--backend cpu" >> $D/new.txt
        one $BIN $m async "--backend cpu-async" >> $D/async.txt
        i=$((i + 1))
    done
    cmp -s $D/out-old/model.safetensors $D/out-new/model.safetensors && same=identical || same=DIFFERENT
    diff -r $D/out-new $D/out-async > /dev/null && asame=identical || asame=DIFFERENT
    ow=$(cut -d' ' -f1 $D/old.txt | median); nw=$(cut -d' ' -f1 $D/new.txt | median); aw=$(cut -d' ' -f1 $D/async.txt | median)
    oc=$(cut -d' ' -f2 $D/old.txt | median); nc=$(cut -d' ' -f2 $D/new.txt | median)
    awk -v ow=$ow -v nw=$nw -v oc=$oc -v nc=$nc -v s=$same 'BEGIN {
        printf "  wall  before %7.2f s  now %7.2f s  ratio %.3f\n", ow, nw, nw / ow
        printf "  cpu   before %7.2f s  now %7.2f s  ratio %.3f   (bound 1.03)   outputs %s\n", oc, nc, nc / oc, s }'
    echo "== 2. $m: cpu-async vs cpu (same binary)"
    awk -v nw=$nw -v aw=$aw -v s=$asame 'BEGIN {
        printf "  wall  cpu %7.2f s  cpu-async %7.2f s  ratio %.3f   outputs %s\n", nw, aw, aw / nw, s }'
    grep "queues (" $D/log-async.txt | sed 's/^forge-stream: /  cpu-async: /'
    grep "queues (" $D/log-new.txt | sed 's/^forge-stream: /  cpu:       /'
done
