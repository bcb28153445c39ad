#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1, for tests and for contributors:
#   etcd, kube-apiserver (RBAC, service-account tokens, the default admission plugins plus
#   OwnerReferencesPermissionEnforcement), kube-controller-manager, kube-scheduler, and KWOK faking the GPU and CPU
#   nodes of scripts/control-plane/kwok-nodes.yaml (no container runtime or GPU can exist here; KWOK stands in
#   for their kubelets and marks scheduled pods Running).
#
#   scripts/local-cluster.sh up      build or reuse the binaries, start everything, write .local-cluster/kubeconfig
#   scripts/local-cluster.sh down    stop everything and drop the cluster's data
#   scripts/local-cluster.sh status  say what runs
#
# Each `up` starts an empty cluster; `up` on a running one only checks it. Ports: FLEETSERVE_APISERVER_PORT
# (16443), and the four after it for etcd client/peer, controller-manager and scheduler health; KWOK's kubelet
# stand-in serves on the fifth.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${FLEETSERVE_CLUSTER_DIR:-$root/.local-cluster}"
api_port="${FLEETSERVE_APISERVER_PORT:-16443}"
etcd_port=$((api_port + 1)) etcd_peer_port=$((api_port + 2)) cm_port=$((api_port + 3)) sched_port=$((api_port + 4))
kwok_port=$((api_port + 5))
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf '[local-cluster] %s\n' "$*" >&2; }

running() { [[ -f "$state/pids/$1" ]] && kill -0 "$(cat "$state/pids/$1")" 2>/dev/null; }

wait_until() {  # description timeout-seconds command...
  local what=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then log "timed out waiting for $what; logs in $state/logs"; exit 1; fi
    sleep 0.5
  done
}

start() {  # name binary args...
  local name=$1; shift
  setsid "$@" >"$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/pids/$name"
}

make_pki() {
  local pki="$state/pki"
  [[ -f "$pki/tokens.csv" ]] && return
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=fleetserve-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$pki/apiserver.key" \
    -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' \
    > "$pki/apiserver.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 \
    -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  # Service-account tokens are signed with this key pair (TokenRequest: `kubectl create token`).
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  # Static tokens for the components; their user names are the ones Kubernetes' bootstrap RBAC roles name.
  # KWOK stands in for every fake node's kubelet, so it gets an admin token like the admin user.
  {
    echo "$(openssl rand -hex 16),admin,admin,\"system:masters\""
    echo "$(openssl rand -hex 16),system:kube-controller-manager,system:kube-controller-manager"
    echo "$(openssl rand -hex 16),system:kube-scheduler,system:kube-scheduler"
    echo "$(openssl rand -hex 16),kwok,kwok,\"system:masters\""
  } > "$pki/tokens.csv"
}

kubeconfig_for() {  # user file
  local token
  token=$(awk -F, -v u="$1" '$2 == u {print $1}' "$state/pki/tokens.csv")
  cat > "$2" <<EOF
apiVersion: v1
kind: Config
current-context: local
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $state/pki/ca.crt
users:
- name: $1
  user:
    token: $token
contexts:
- name: local
  context:
    cluster: local
    user: $1
    namespace: default
EOF
}

up() {
  if running kube-apiserver && curl -sf --cacert "$state/pki/ca.crt" "https://127.0.0.1:$api_port/readyz" >/dev/null; then
    log "already running: export KUBECONFIG=$state/kubeconfig"
    return
  fi
  down quiet
  local started=$SECONDS bin
  bin="$(bash "$root/scripts/control-plane/build.sh" | tail -1)"
  kubectl="$bin/kubectl"
  mkdir -p "$state/logs" "$state/pids" "$state/etcd"
  make_pki
  local pki="$state/pki"
  kubeconfig_for admin "$state/kubeconfig"
  kubeconfig_for system:kube-controller-manager "$state/controller-manager.kubeconfig"
  kubeconfig_for system:kube-scheduler "$state/scheduler.kubeconfig"
  kubeconfig_for kwok "$state/kwok.kubeconfig"

  start etcd "$bin/etcd" --name local --data-dir "$state/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "local=http://127.0.0.1:$etcd_peer_port" --log-level warn
  wait_until etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

  start kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --token-auth-file "$pki/tokens.csv" --authorization-mode Node,RBAC \
    --enable-admission-plugins OwnerReferencesPermissionEnforcement \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --cert-dir "$pki" --enable-priority-and-fairness=false --v 1
  wait_until kube-apiserver 90 "$kubectl" --kubeconfig "$state/kubeconfig" get --raw /readyz

  # A loaded CI machine can delay KWOK's and the node agents' heartbeats; a longer grace than the default 40 s
  # keeps nodes from flapping NotReady (and their pods unready) under load.
  start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$cm_port" --leader-elect=false \
    --use-service-account-credentials --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-name fleetserve-local --node-monitor-grace-period 120s --v 1
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" --authorization-kubeconfig "$state/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --v 1
  # KWOK manages only the nodes annotated as fake, so real-process nodes (e2e's node agent) can live beside them.
  start kwok "$bin/kwok" --kubeconfig "$state/kwok.kubeconfig" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake --cidr 10.244.0.1/16 \
    --node-ip 10.0.0.1 --server-address "127.0.0.1:$kwok_port" --node-lease-duration-seconds 40
  wait_until kube-controller-manager 60 curl -skf "https://127.0.0.1:$cm_port/healthz"
  wait_until kube-scheduler 60 curl -skf "https://127.0.0.1:$sched_port/healthz"
  # Pods need their namespace's default ServiceAccount, which the controller-manager creates.
  wait_until "the default ServiceAccount" 60 "$kubectl" --kubeconfig "$state/kubeconfig" get serviceaccount default
  "$kubectl" --kubeconfig "$state/kubeconfig" apply -f "$root/scripts/control-plane/kwok-nodes.yaml" >/dev/null
  "$kubectl" --kubeconfig "$state/kubeconfig" wait node -l type=kwok --for condition=Ready --timeout 60s >/dev/null
  log "up in $((SECONDS - started)) s: export KUBECONFIG=$state/kubeconfig"
}

down() {
  local name pid
  for name in "${components[@]}"; do
    running "$name" || continue
    pid=$(cat "$state/pids/$name")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for name in "${components[@]}"; do
    [[ -f "$state/pids/$name" ]] || continue
    pid=$(cat "$state/pids/$name")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$state/pids/$name"
  done
  rm -rf "$state/etcd"
  [[ "${1:-}" == quiet ]] || log "stopped"
}

status() {
  local name
  for name in "${components[@]}"; do
    if running "$name"; then echo "$name: running (pid $(cat "$state/pids/$name"))"; else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
