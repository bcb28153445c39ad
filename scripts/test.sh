#!/usr/bin/env bash
# Sets up everything the tests need, then runs them all. Tests start their own services (Prometheus, the
# engine server, the Kubernetes API emulator and the operator) on 127.0.0.1 and stop them at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PATH="$PWD/.tools:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# No GPU: tests/gpu's kernel tests run through Triton's interpreter on the CPU (in float16; numpy has no bf16).
command -v nvidia-smi >/dev/null 2>&1 || export TRITON_INTERPRET=1
exec .venv/bin/pytest "$@"
