#!/usr/bin/env bash
# On a machine with docker, kind, kubectl and helm: build both images, load them into a new kind cluster,
# install the chart, apply the CPU example, and query it through its router. Deletes the cluster at the end
# (KEEP=1 keeps it). Not run by CI: no container runtime exists there.
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster="${CLUSTER:-fleetserve-e2e}"
tag=0.1.0
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e/kind: $tool is not on PATH" >&2; exit 2; }
done

docker build -f engine_image/Dockerfile -t "ghcr.io/fleetserve/engine:$tag" .
docker build -f operator/Dockerfile -t "ghcr.io/fleetserve/operator:$tag" .
kind create cluster --name "$cluster" --wait 120s
[[ "${KEEP:-0}" == 1 ]] || trap 'kind delete cluster --name "$cluster"' EXIT
kind load docker-image --name "$cluster" "ghcr.io/fleetserve/engine:$tag" "ghcr.io/fleetserve/operator:$tag"

kubectl apply --server-side -f helm/crds/
helm install fleetserve helm/ --namespace fleetserve-system --create-namespace --set autoscaler.enabled=false --wait
kubectl apply -f examples/cpu-tiny.yaml
kubectl wait --for=condition=Ready llmd/tiny --timeout=600s
kubectl get llmd tiny

kubectl port-forward service/tiny 18000:8000 >/tmp/fleetserve-e2e-port-forward.log 2>&1 &
forward=$!
trap 'kill $forward; [[ "${KEEP:-0}" == 1 ]] || kind delete cluster --name "$cluster"' EXIT
for _ in $(seq 30); do curl -sf http://127.0.0.1:18000/health >/dev/null && break; sleep 1; done
curl -sf http://127.0.0.1:18000/v1/chat/completions -H 'Content-Type: application/json' \
  -d '{"model": "tiny", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}'
echo
echo "e2e/kind: the CPU example answered through its router"
