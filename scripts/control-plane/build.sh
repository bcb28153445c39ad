#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy into a cache outside the repository:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (one pinned Kubernetes release) and KWOK,
# Prometheus (upstream's build: Debian's leaves out kubernetes_sd_configs), and prometheus-operator's PodMonitor CRD
# from its module (the tests install it as a cluster with kube-prometheus-stack has it). The cache folder is keyed by
# the pins, so a pin change rebuilds and nothing else does.
# Prints the folder holding the binaries on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kube_version="$(awk '/require k8s.io\/kubernetes/ {print $3}' "$here/kubernetes/go.mod")"
prometheus_operator=github.com/prometheus-operator/prometheus-operator@v0.85.0
key="$( (cat "$here"/{kubernetes,etcd,kwok,prometheus}/go.mod; echo "$prometheus_operator") | sha256sum | cut -c1-12)"
bin="${FLEETSERVE_CACHE:-$HOME/.cache/fleetserve}/control-plane/${kube_version}-${key}"
wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok prometheus)

have_all() { for b in "${wanted[@]}"; do [[ -x "$bin/$b" ]] || return 1; done; [[ -f "$bin/crds/podmonitors.yaml" ]]; }
if have_all; then echo "$bin"; exit 0; fi

mkdir -p "$bin"
export CGO_ENABLED=0
# The version the apiserver reports (kubectl version, helm's .Capabilities.KubeVersion); a module build has none.
minor="${kube_version#v1.}"; minor="${minor%%.*}"
version_flags="-X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$kube_version -X k8s.io/client-go/pkg/version.gitMajor=1 \
-X k8s.io/client-go/pkg/version.gitMinor=$minor"

build() {  # module-dir output package [extra ldflags]
  local start=$SECONDS
  echo "building $2 ($3) ..." >&2
  (cd "$here/$1" && go build -trimpath -ldflags "-s -w ${4:-}" -o "$bin/$2.tmp" "$3")
  mv "$bin/$2.tmp" "$bin/$2"
  echo "built $2 in $((SECONDS - start)) s" >&2
}
[[ -x "$bin/etcd" ]] || build etcd etcd go.etcd.io/etcd/server/v3
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [[ -x "$bin/$cmd" ]] || build kubernetes "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$version_flags"
done
[[ -x "$bin/kwok" ]] || build kwok kwok sigs.k8s.io/kwok/cmd/kwok
[[ -x "$bin/prometheus" ]] || build prometheus prometheus github.com/prometheus/prometheus/cmd/prometheus
if [[ ! -f "$bin/crds/podmonitors.yaml" ]]; then
  source_dir="$(cd "$here/kwok" && go mod download -json "$prometheus_operator" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  mkdir -p "$bin/crds"
  cp "$source_dir/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml" "$bin/crds/podmonitors.yaml"
fi
echo "$bin"
