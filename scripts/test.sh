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
if [ $# -gt 0 ]; then
    .venv/bin/pytest "$@"
    exit
fi
# The whole-stack scenario runs in a pytest process of its own, after the rest: it starts a dozen engine processes
# on this machine, and next to the memory that hundreds of earlier tests leave in one long-lived pytest process
# (models loaded in-process) they ran the machine out of memory until etcd and the apiserver stalled.
SCENARIO=e2e/serve-through-load-and-spot-reclaims
status=0
.venv/bin/pytest --ignore="$SCENARIO" || status=$?
.venv/bin/pytest "$SCENARIO" || status=$?
exit "$status"
