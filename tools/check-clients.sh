#!/bin/sh
# check-clients.sh: `make check-clients` (outside make test): a venv under
# build/, the real clients from PyPI (torch, transformers, compressed-tensors,
# gptqmodel), then tools/check_clients.py on generated models.  An install
# that fails is reported with its error; the checks that need it are said to
# be skipped, the others still run.
set -u
BUILD=${BUILD:-build}
VENV=${VENV:-$BUILD/clients-venv}
BIN=${FS_BIN:-bin/forge-stream}
GEN=${FS_GEN_TINY:-$BUILD/gen-tiny}
LOG=$BUILD/check-clients-pip.log
mkdir -p "$BUILD"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || { echo "check-clients: python3 -m venv failed (apt-get install python3-venv)"; exit 2; }
PIP="$VENV/bin/pip"
: > "$LOG"
# torch: the CPU index when it is reachable (small), else PyPI's default wheel
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$PIP" install -q --index-url https://download.pytorch.org/whl/cpu torch >> "$LOG" 2>&1 ||
        "$PIP" install -q torch >> "$LOG" 2>&1 || { echo "check-clients: pip install torch failed:"; tail -5 "$LOG"; exit 1; }
fi
"$PIP" install -q transformers compressed-tensors optimum safetensors numpy >> "$LOG" 2>&1 ||
    { echo "check-clients: pip install transformers compressed-tensors failed:"; tail -5 "$LOG"; exit 1; }
if ! "$VENV/bin/python" -c "import gptqmodel" 2>/dev/null; then
    # GPTQModel builds CUDA kernels unless told not to; its CPU (torch) kernel needs none
    BUILD_CUDA_EXT=0 "$PIP" install -q --no-build-isolation gptqmodel >> "$LOG" 2>&1 ||
        { echo "check-clients: pip install gptqmodel failed (the gptq checks are skipped):"; grep -i "error" "$LOG" | tail -5; }
fi
"$VENV/bin/python" -c "import torch, transformers, compressed_tensors; print('check-clients: torch', torch.__version__, 'transformers', transformers.__version__, 'compressed-tensors', compressed_tensors.__version__)"
exec "$VENV/bin/python" tools/check_clients.py --bin "$BIN" --gen-tiny "$GEN" --work "$BUILD/check-clients"
