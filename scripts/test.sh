#!/usr/bin/env bash
# Sets up everything the tests need, then runs them all. The local Kubernetes control plane
# (scripts/local-cluster.sh) starts once for the run and stops at the end; tests start their other services
# (Prometheus, engine servers, the operator) on 127.0.0.1 themselves and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PATH="$PWD/.tools:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# No GPU: tests/gpu's kernel tests run through Triton's interpreter on the CPU (in float16; numpy has no bf16).
command -v nvidia-smi >/dev/null 2>&1 || export TRITON_INTERPRET=1
bash scripts/local-cluster.sh up
trap 'bash scripts/local-cluster.sh down' EXIT
.venv/bin/pytest "$@"
