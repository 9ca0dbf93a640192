#!/usr/bin/env bash
# gpu-check.sh REPORT_DIR: the whole GPU check of forge-stream, run from the
# project root on a machine with an NVIDIA GPU and nothing prepared (README
# "CUDA").  Every step's output goes to REPORT_DIR/NN-step.log, the verdicts
# and times to REPORT_DIR/summary.txt; the exit status is 0 only when every
# step passed.  Budget: under 8 minutes on one H100/H200 (each step has its
# own timeout below; the MoE benchmark is bounded by BENCH_SECONDS).
#
#   1. env        the GPU, driver, nvcc, the commit
#   2. deps       tools/deps.sh (Debian packages; root installs them)
#   3. build      make CUDA=1 (sm_80, 86, 89, 90, 100 where nvcc has it, + PTX)
#   4. device     the binary itself must see the device (--version)
#   5. cuda       the CUDA suites with FS_REQUIRE_CUDA=1 (a skip is a failure)
#   6. resume     kill/resume on --backend cuda: a generated dense and MoE
#                 model killed at spread crash points, resumed, byte-identical
#                 to the uninterrupted cuda run
#   7. demo       make demo (auto = cuda after its self-test) and the GPTQ run
#                 again on --backend cpu: perplexities within 0.5 %
#   8. bench      make bench-gpu (tools/bench-gpu.cu), JSON in the report
#
# Exit 3 when there is no GPU (the message says what was looked for), 2 for
# a usage error, 1 when a step failed.
# FS_GPU_CHECK_REHEARSE=cpu runs steps 2-7 on --backend cpu without a GPU
# (a check of this script on a machine without one; it proves nothing about
# CUDA and says so in the summary); GPU_CHECK_JOBS and GPU_CHECK_TIME_SCALE
# set make's -j and stretch the time limits for such a rehearsal.
set -u
if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: tools/gpu-check.sh REPORT_DIR   (run from the project root)" >&2
    exit 2
fi
if [ ! -f tools/gpu-check.sh ] || [ ! -f Makefile ]; then
    echo "gpu-check: run from the project root (tools/gpu-check.sh not found here)" >&2
    exit 2
fi
REPORT=$1
mkdir -p "$REPORT" || { echo "gpu-check: cannot create $REPORT" >&2; exit 2; }
REPORT=$(cd "$REPORT" && pwd)
SUMMARY=$REPORT/summary.txt
REHEARSE=${FS_GPU_CHECK_REHEARSE:-}
BACKEND=cuda
[ "$REHEARSE" = cpu ] && BACKEND=cpu
BENCH_SECONDS=${BENCH_SECONDS:-90}
JOBS=${GPU_CHECK_JOBS:-$(nproc 2>/dev/null || echo 4)}
SLOW=${GPU_CHECK_TIME_SCALE:-1}     # a rehearsal on a small machine may need longer limits
SHARED=${SHARED:-../shared}
T0=$(date +%s)
FAILED=0
: > "$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME TIMEOUT_S COMMAND...: runs it with its log, records PASS/FAIL and seconds
NSTEP=0
step() {
    local name=$1 limit=$(( $2 * SLOW ))
    shift 2
    NSTEP=$((NSTEP + 1))
    local log
    log=$REPORT/$(printf '%02d' $NSTEP)-$name.log
    local t=$(date +%s)
    echo "== $name (limit ${limit}s): $*" > "$log"
    timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
    local rc=$?
    local dt=$(( $(date +%s) - t ))
    if [ $rc -eq 0 ]; then
        note "PASS  $name  ${dt}s"
    else
        [ $rc -eq 124 ] && echo "gpu-check: timed out after ${limit}s" >> "$log"
        note "FAIL  $name  ${dt}s  (exit $rc; see $(basename "$log"); last lines below)"
        tail -5 "$log" | sed 's/^/      /' | tee -a "$SUMMARY"
        FAILED=1
    fi
    return $rc
}

# ---- 1. is there a GPU at all ---------------------------------------------------------------
{
    echo "date: $(date -u)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "host: $(uname -a)"
    command -v nvidia-smi >/dev/null && nvidia-smi 2>&1
    command -v nvcc >/dev/null && nvcc --version 2>&1 || ls /usr/local/cuda/bin/nvcc 2>&1
} > "$REPORT/01-env.log" 2>&1
NSTEP=1
if [ "$REHEARSE" = cpu ]; then
    note "REHEARSAL on --backend cpu (FS_GPU_CHECK_REHEARSE=cpu): no GPU used; nothing here is a GPU result"
else
    gpus=""
    if command -v nvidia-smi >/dev/null 2>&1; then
        gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
    fi
    if [ -z "$gpus" ] || [ "$gpus" = 0 ]; then
        if ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
            gpus=dev
        else
            note "gpu-check: no GPU: nvidia-smi lists none and there is no /dev/nvidia0 (see 01-env.log); nothing was built or run"
            exit 3
        fi
    fi
    note "gpu-check: GPU(s) found: $(nvidia-smi -L 2>/dev/null | head -1 || echo "/dev/nvidia*")"
fi
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH

# ---- 2-3. deps and the CUDA build ----------------------------------------------------------------
step deps 300 sh tools/deps.sh || { note "gpu-check: dependencies missing: stopping"; exit 1; }
step build 400 make -j"$JOBS" CUDA=1 bin/forge-stream build/forge-stream-test build/run-tests build/gen-tiny \
    build/fuzz build/bench-gpu || { note "gpu-check: the CUDA build failed: stopping"; exit 1; }

# ---- 4. the binary sees the device ---------------------------------------------------------------
if [ "$REHEARSE" != cpu ]; then
    step device 60 bash -c 'bin/forge-stream --version | tee /dev/stderr | grep -q "^cuda: [1-9][0-9]* device"' ||
        { note "gpu-check: the build does not see the GPU: stopping"; exit 1; }
fi

# ---- 5. the CUDA suites (no skips allowed) ----------------------------------------------------------
REQ=1
[ "$REHEARSE" = cpu ] && REQ=0
step cuda-suites 300 env FS_REQUIRE_CUDA=$REQ CK_RUN_SUITE=cuda FS_BIN="$PWD/build/forge-stream-test" \
    FS_SHARED="$SHARED" build/run-tests

# ---- 6. kill and resume on the backend ------------------------------------------------------------------
resume_check() {
    local bin=$PWD/build/forge-stream-test gen=$PWD/build/gen-tiny tmp
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/fs-gpu-resume-XXXXXX") || return 1
    trap 'rm -rf "$tmp"' RETURN
    calib_file() {            # 1000 token ids < 96, little-endian u32 (no Python needed)
        local i s=7 v
        for ((i = 0; i < 1000; i++)); do
            s=$(( (s * 1103515245 + 12345) % 2147483648 ))
            v=$(( s % 96 ))
            printf "\\x$(printf %02x $v)\\x00\\x00\\x00"
        done > "$1"
    }
    local type points spread n=0
    for type in llama qwen3_moe deepseek_v3; do
        local m=$tmp/$type flags ref=$tmp/$type-ref
        "$gen" --type "$type" --layers 3 --out "$m" || { echo "gen-tiny $type failed"; return 1; }
        calib_file "$tmp/calib.u32"
        flags="--model $m --calib $tmp/calib.u32 --samples 4 --seq-len 32 --max-shard-size 40K --backend $BACKEND"
        FORGE_STREAM_CRASH_REPORT=1 "$bin" quantize $flags --out "$ref" --quiet 2> "$tmp/ref.err" ||
            { echo "$type: the reference run failed:"; cat "$tmp/ref.err"; return 1; }
        points=$(sed -n 's/.*crash points passed: \([0-9]*\).*/\1/p' "$tmp/ref.err" | tail -1)
        [ -n "$points" ] && [ "$points" -ge 10 ] || { echo "$type: no crash point count"; cat "$tmp/ref.err"; return 1; }
        spread=6
        for k in $(seq 0 $((spread - 1))); do
            local p=$((1 + k * (points - 1) / (spread - 1))) out=$tmp/$type-o code
            rm -rf "$out"
            FORGE_STREAM_CRASH_AT="*:$p" "$bin" quantize $flags --out "$out" --quiet 2> "$tmp/kill.err"
            code=$?
            if [ $code -ne 137 ]; then echo "$type *:$p: not killed (exit $code)"; cat "$tmp/kill.err"; return 1; fi
            if [ $((k % 2)) -eq 1 ]; then
                "$bin" --resume --work "$out/.forge-work" --quiet 2> "$tmp/res.err"
            else
                "$bin" quantize --resume $flags --out "$out" --quiet 2> "$tmp/res.err"
            fi || { echo "$type *:$p: resume failed"; cat "$tmp/res.err"; return 1; }
            diff -r "$ref" "$out" > /dev/null || { echo "$type *:$p: the resumed output differs"; diff -rq "$ref" "$out"; return 1; }
            n=$((n + 1))
        done
        echo "$type: $spread kill points of $points resumed byte-identical on --backend $BACKEND"
    done
    echo "resume: $n kill points resumed byte-identical"
}
step resume 240 bash -c "$(declare -f resume_check); BACKEND=$BACKEND resume_check"

# ---- 7. the demo on the device and its CPU twin ----------------------------------------------------------
demo_check() {
    make demo CUDA=1 SHARED="$SHARED" > "$REPORT/demo-cuda.txt" 2>&1 || { cat "$REPORT/demo-cuda.txt"; return 1; }
    cat "$REPORT/demo-cuda.txt"
    if [ "$BACKEND" = cuda ]; then
        grep -q "backend cuda: start-up self-test passed" "$REPORT/demo-cuda.txt" ||
            { echo "demo: the run did not use cuda (no 'self-test passed' line)"; return 1; }
    fi
    local g
    g=$(awk '/GPTQ 4-bit/ { print $(NF-1) }' "$REPORT/demo-cuda.txt")
    # the same GPTQ quantization on the CPU, evaluated the same way
    local MODEL=$SHARED/data/stories260K TOKENS=$SHARED/data/wikitext2/wiki.test.stories260K.u32 out=build/demo-cpu
    rm -rf "$out" && mkdir -p "$out"
    bin/forge-stream quantize --model "$MODEL" --out "$out/gptq" --calib "$TOKENS" --samples 64 --seq-len 256 \
        --bits 4 --group-size 32 --act-order --backend cpu --quiet || return 1
    local c
    c=$(bin/forge-stream eval --model "$out/gptq" --tokens "$TOKENS" --skip-tokens 16384 --max-windows 300 --json --quiet |
        sed -n 's/.*"ppl": \([0-9.]*\).*/\1/p')
    echo "GPTQ perplexity: $BACKEND (make demo) $g, cpu $c"
    awk -v a="$g" -v b="$c" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d;
        printf "relative difference %.4f%% (limit 0.5%%)\n", 100 * d; exit !(a > 0 && b > 0 && d <= 0.005) }'
}
step demo 240 bash -c "$(declare -f demo_check); REPORT='$REPORT' SHARED='$SHARED' BACKEND=$BACKEND demo_check"

# ---- 8. the benchmark ----------------------------------------------------------------------------------
if [ "$REHEARSE" != cpu ]; then
    step bench-gpu $((BENCH_SECONDS + 150)) make bench-gpu CUDA=1 \
        BENCH_GPU_ARGS="--seconds $BENCH_SECONDS --json $REPORT/bench-gpu.json"
fi

note "gpu-check: $(( $(date +%s) - T0 ))s in all; report in $REPORT"
if [ $FAILED -ne 0 ]; then note "gpu-check: FAILED"; exit 1; fi
note "gpu-check: all steps passed"
exit 0
