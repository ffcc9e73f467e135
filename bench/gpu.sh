#!/usr/bin/env bash
# SFT on one GPU, unitune against TRL's SFTTrainer in the same script: full fine-tuning of a
# random-initialised model with the shape of Qwen2.5-0.5B (then 1.5B while time is left), bf16,
# packing on in both (unitune: block-causal masks; TRL: its padding-free bfd packing), rows of
# 2048 tokens, batch 8, 3 warm-up + 20 timed steps. Prints the bench/run.py table: tokens/s, and
# MFU against the bf16 matmul rate (8192^2) measured on the same GPU in the same run. Meant to
# finish within 5 minutes on one H200.
#
#   here, once (PyPI reachable):  bash bench/gpu.sh --fetch     wheels the device lacks + the tokenizer -> bench/.gpu
#   on the device machine:        bash bench/gpu.sh             (device tool: carry ["bench/.gpu"])
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=bench/.gpu
if [ "${1:-}" = "--fetch" ]; then
    # versions as in bench/.venv-peers; the device image has torch, transformers, peft, accelerate, pyarrow
    mkdir -p "$GPU/whl" "$GPU/tokenizer"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$GPU/whl" trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf
    cp ~/.cache/unitune/models/smollm2-135m-instruct/{tokenizer.json,tokenizer_config.json,chat_template.jinja} \
        "$GPU/tokenizer/"
    du -sh "$GPU"
    exit 0
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$GPU"/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
start=$(date +%s)
for size in 0.5b 1.5b; do
    left=$((290 - ($(date +%s) - start)))
    if [ "$size" != 0.5b ] && [ "$left" -lt 120 ]; then echo "gpu.sh: $size skipped ($left s left)"; break; fi
    python3 bench/gpu_model.py "$size" "/tmp/qwen-$size" "$GPU/tokenizer"
    timeout "$left" python3 bench/run.py --python python3 --device cuda --model "/tmp/qwen-$size" --only sft_full \
        --precision bf16 --frameworks unitune+packing,trl+packing --max-length 2048 --batch-size 8 \
        --steps 20 --warmup 3 --timeout 150 --out "/tmp/gpu-$size" | tee "$OUT/gpu-$size.txt" || true
done
