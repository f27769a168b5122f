#!/usr/bin/env bash
# A real kube-apiserver (+ etcd) for Herald's tier-3 tests and the lab, built from the published Go modules at the
# versions pinned in tools/kube-apiserver/ (see docs/kube-apiserver.md).
#
#   scripts/kube-apiserver.sh build
#       build the pinned kube-apiserver and etcd once (cached; later runs take milliseconds) and print their paths
#   sudo scripts/kube-apiserver.sh up [--netns NAME | --host] [--addr IP] [--port N] [--dir DIR]
#                                     [--service-cidr CIDR[,CIDR6]] [--etcd-port N] [--timeout S] [--foreground]
#                                     [-- KUBE_APISERVER_ARGS...]
#       start etcd + kube-apiserver inside a network namespace (RBAC, per-run CA and service-account key, admin
#       kubeconfig, audit log); prints `KEY=value` lines to stdout (KUBECONFIG, HRDK_ID, HRDK_NETNS, HRDK_DIR,
#       HRDK_SERVER, HRDK_ETCD_PID, HRDK_APISERVER_PID), progress to stderr. --foreground stays attached and
#       removes everything on exit, Ctrl-C or SIGTERM. --host: no namespace, both listen on the caller's loopback
#       (--addr 127.x.y.z, default 127.0.0.1; free ports unless --port/--etcd-port say otherwise); needs no root.
#   sudo scripts/kube-apiserver.sh down [ID | --dir DIR | --all] [--keep-dir] [--now]
#       stop the processes, delete the namespace (if `up` created it) and DIR; --now: SIGKILL at once (a test's
#       throwaway instance: on SIGTERM kube-apiserver waits for its clients' watches, up to the 10 s grace period)
#   sudo scripts/kube-apiserver.sh exec [ID | --dir DIR] CMD...
#       run CMD in the instance's namespace with KUBECONFIG set (e.g. `exec hrdk-1a2b kubectl get ns`)
#   sudo scripts/kube-apiserver.sh sa-kubeconfig [ID | --dir DIR] NAMESPACE/NAME [SECONDS]
#       write DIR/sa-NAMESPACE-NAME.kubeconfig holding a bound token of that ServiceAccount; print its path
#   sudo scripts/kube-apiserver.sh stop-apiserver [ID | --dir DIR] [--now]
#   sudo scripts/kube-apiserver.sh start-apiserver [ID | --dir DIR]
#       an API outage: stop kube-apiserver (etcd and the objects stay; --now: SIGKILL, a crash), start it again with
#       the same flags
#   scripts/kube-apiserver.sh pin KUBERNETES_VERSION [ETCD_VERSION]
#       rewrite tools/kube-apiserver/go.mod (and etcd/go.mod) for another release; review and commit the result
#
# Defaults: a new namespace `hrdk-XXXX` with the address on its loopback, 203.0.113.254:6443, Services from
# 203.0.113.224/28, DIR=/tmp/hrdk-XXXX. With --netns NAME of an existing namespace (a test's topology), the address
# is used where it already is, or added to its loopback; `down` then removes only what `up` added. A second,
# IPv6 CIDR in --service-cidr (from 2001:db8::/32) makes the cluster dual-stack for Services.
#
# Environment: HERALD_CACHE (default ~/.cache/herald) holds the binaries under kube/; KUBE_APISERVER_BIN and ETCD_BIN
# use prebuilt binaries instead (no Go needed). Go's module and build caches are Go's own (GOMODCACHE, GOCACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

KUBE_MOD=$REPO/tools/kube-apiserver
ETCD_MOD=$KUBE_MOD/etcd
CACHE_ROOT=${HERALD_CACHE:-${HOME:-/root}/.cache/herald}/kube
RUN_DIR=${HERALD_KUBE_RUN:-/run/herald-kube} # one symlink per running instance: ID -> DIR
# --host instances need no root; a user's are recorded in a directory of their own.
if [ -z "${HERALD_KUBE_RUN:-}" ] && [ "$(id -u)" != 0 ]; then RUN_DIR=${XDG_RUNTIME_DIR:-/tmp}/herald-kube-$(id -u); fi
PREFIX=hrdk-

die() { printf 'kube-apiserver.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || die "network namespaces need root: sudo $0 $*"; }
# in_ns NETNS CMD...: run CMD in namespace NETNS, or right here when NETNS is empty (--host).
in_ns() {
  local netns=$1
  shift
  if [ -n "$netns" ]; then ip netns exec "$netns" "$@"; else "$@"; fi
}
# ns_prefix NETNS: IN_NS=(the words that run a command in NETNS), for commands started with `&`, which must be
# simple commands (a function would run in a forked shell, and $! would not be the server's PID).
ns_prefix() {
  IN_NS=()
  if [ -n "$1" ]; then IN_NS=(ip netns exec "$1"); fi
}
# need_root_for DIR COMMAND: root, unless the instance in DIR runs in the host namespace (--host).
need_root_for() {
  local NETNS=""
  # shellcheck disable=SC1091
  if [ -f "$1/state" ]; then NETNS=$(. "$1/state" && echo "$NETNS"); fi
  if [ -n "$NETNS" ]; then need_root "$2"; fi
}

# ---- build ------------------------------------------------------------------------------------------------------
# The pinned versions, read from our go.mod files (no Go invocation on the cached path).
mod_version() { sed -n "s#^[[:space:]]*\(require[[:space:]]\+\)\?$2 \(v[^ ]*\).*#\2#p" "$1" | head -1; }

# Flags as upstream's release build (hack/lib/golang.sh, hack/lib/version.sh): static, stripped, trimmed paths, the
# same build tags, and the version stamped so /version and `kubectl version` report the release.
kube_ldflags() {
  local v=$1 minor pkg flags="-s -w"
  minor=${v#v1.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    flags+=" -X $pkg.gitCommit="
  done
  echo "$flags"
}
KUBE_TAGS=selinux,notest,grpcnotrace

# build: sets KUBE_APISERVER_BIN and ETCD_BIN, building them into the cache when the key changed.
build() {
  if [ -n "${KUBE_APISERVER_BIN:-}" ] && [ -n "${ETCD_BIN:-}" ]; then
    { [ -x "$KUBE_APISERVER_BIN" ] && [ -x "$ETCD_BIN" ]; } || die "KUBE_APISERVER_BIN or ETCD_BIN is not an executable"
    return
  fi
  local kube_ver etcd_ver go_ver key dir tmp
  kube_ver=$(mod_version "$KUBE_MOD/go.mod" k8s.io/kubernetes)
  etcd_ver=$(mod_version "$ETCD_MOD/go.mod" go.etcd.io/etcd/server/v3)
  { [ -n "$kube_ver" ] && [ -n "$etcd_ver" ]; } ||
    die "cannot read the pinned versions from $KUBE_MOD/go.mod, $ETCD_MOD/go.mod"
  command -v go >/dev/null ||
    die "go not found: install Go $(sed -n 's/^go //p' "$KUBE_MOD/go.mod")+ (or set KUBE_APISERVER_BIN, ETCD_BIN)"
  go_ver=$(GOTOOLCHAIN=local go env GOVERSION)
  # Rebuilt only when the pins, the build flags or the Go release change.
  key=$( { cat "$KUBE_MOD/go.mod" "$KUBE_MOD/go.sum" "$ETCD_MOD/go.mod" "$ETCD_MOD/go.sum"
           echo "$go_ver $KUBE_TAGS $(kube_ldflags "$kube_ver")"; } | sha256sum | cut -c1-12)
  dir=$CACHE_ROOT/$kube_ver-etcd-$etcd_ver-$key
  KUBE_APISERVER_BIN=$dir/kube-apiserver
  ETCD_BIN=$dir/etcd
  if [ -x "$KUBE_APISERVER_BIN" ] && [ -x "$ETCD_BIN" ]; then touch "$dir"; return; fi

  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.lock"
  flock 9 # another run may be building the same key
  if ! { [ -x "$KUBE_APISERVER_BIN" ] && [ -x "$ETCD_BIN" ]; }; then
    say "building kube-apiserver $kube_ver and etcd $etcd_ver with $go_ver (first time for this pin: minutes)"
    tmp=$(mktemp -d "$CACHE_ROOT/.build-XXXXXX")
    # GOTOOLCHAIN=local: never fetch another Go; -mod=readonly: go.mod/go.sum are the pins, never rewritten.
    (cd "$KUBE_MOD" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" nice -n 19 \
      go build -trimpath -tags "$KUBE_TAGS" -ldflags "$(kube_ldflags "$kube_ver")" -o "$tmp/kube-apiserver" \
      k8s.io/kubernetes/cmd/kube-apiserver) || { rm -rf "$tmp"; die "building kube-apiserver failed"; }
    (cd "$ETCD_MOD" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" nice -n 19 \
      go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3) ||
      { rm -rf "$tmp"; die "building etcd failed"; }
    printf 'kubernetes %s\netcd %s\ngo %s\n' "$kube_ver" "$etcd_ver" "$go_ver" >"$tmp/versions"
    chmod 755 "$tmp"
    rm -rf "$dir" && mv "$tmp" "$dir"
    # Builds for other pins that no run used for two weeks (each is about 120 MB).
    find "$CACHE_ROOT" -mindepth 1 -maxdepth 1 -type d -name 'v*' -mtime +14 -exec rm -rf {} +
  fi
  exec 9>&-
}

# Canonical paths: `alive` compares them with /proc/PID/exe.
build_bins() {
  build
  KUBE_APISERVER_BIN=$(readlink -f "$KUBE_APISERVER_BIN")
  ETCD_BIN=$(readlink -f "$ETCD_BIN")
}

cmd_build() {
  build_bins
  echo "KUBE_APISERVER_BIN=$KUBE_APISERVER_BIN"
  echo "ETCD_BIN=$ETCD_BIN"
}

# ---- pin --------------------------------------------------------------------------------------------------------
# k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging paths, which a module depending on it cannot
# use (replace directives only apply in the main module): we pin each one to the matching v0.Y.Z tag instead.
cmd_pin() {
  local kube_ver=${1:-} etcd_ver=${2:-} json modfile srcdir stage
  [[ $kube_ver == v1.* ]] || die "usage: $0 pin v1.Y.Z [v3.Y.Z]"
  stage=v0.${kube_ver#v1.}
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod
  json=$(cd "$KUBE_MOD" && go mod download -json "k8s.io/kubernetes@$kube_ver") || true
  modfile=$(sed -n 's/.*"GoMod": "\(.*\)",/\1/p' <<<"$json")
  srcdir=$(sed -n 's/.*"Dir": "\(.*\)",/\1/p' <<<"$json")
  [ -f "$modfile" ] || die "the module proxy has no k8s.io/kubernetes@$kube_ver"
  {
    echo "// kube-apiserver for Herald's tests, built from the published modules: docs/kube-apiserver.md."
    echo "// Generated by \`scripts/kube-apiserver.sh pin $kube_ver\`; commit go.mod and go.sum, nothing else."
    echo "module herald.dev/tools/kube-apiserver"
    echo
    grep -m1 '^go ' "$modfile"
    grep -m1 '^godebug ' "$modfile" || true
    echo
    echo "tool k8s.io/kubernetes/cmd/kube-apiserver"
    echo
    echo "require k8s.io/kubernetes $kube_ver"
    echo
    echo "replace ("
    sed -n "s#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\t\1 => \1 $stage#p" "$modfile"
    echo ")"
  } >"$KUBE_MOD/go.mod"
  rm -f "$KUBE_MOD/go.sum"
  (cd "$KUBE_MOD" && nice -n 19 go mod tidy)
  if [ -n "$etcd_ver" ]; then
    (cd "$ETCD_MOD" && go get -tool "go.etcd.io/etcd/server/v3@$etcd_ver" && nice -n 19 go mod tidy)
  fi
  say "pinned kubernetes $kube_ver (staging modules $stage)," \
    "etcd $(mod_version "$ETCD_MOD/go.mod" go.etcd.io/etcd/server/v3)"
  # shellcheck disable=SC2016 # a literal ${ in the sed pattern
  say "upstream tests this release with etcd" \
    "$(sed -n 's/^ETCD_VERSION=\${ETCD_VERSION:-\(.*\)}/\1/p' "$srcdir/hack/lib/etcd.sh")"
}

# ---- up ---------------------------------------------------------------------------------------------------------
new_id() {
  local id
  while :; do
    id=$PREFIX$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
    ip netns list | awk '{print $1}' | grep -qx "$id" || [ -e "$RUN_DIR/$id" ] || [ -e "/tmp/$id" ] || break
  done
  echo "$id"
}

# certs DIR ADDR SERVICE_IP: a CA, the serving certificate, the admin client certificate and the service-account key
# pair, all new for this run (P-256 for TLS, RSA-2048 for tokens as kubeadm does), valid for two days.
certs() {
  local pki=$1/pki addr=$2 svc_ip=$3
  mkdir -p "$pki"
  (
    exec 2>>"$pki/openssl.log"
    cd "$pki"
    umask 077
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 2 \
      -subj "/CN=herald-kube-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout ca.key -out ca.crt
    leaf() { # NAME SUBJECT EXTENSIONS
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$2" -keyout "$1.key" \
        -out "$1.csr"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 -out "$1.crt" \
        -extfile <(printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" "$3")
      rm -f "$1.csr"
    }
    local names=IP:$addr,IP:$svc_ip,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default
    names+=,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
    leaf apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=$names"
    # O=system:masters: the group RBAC's bootstrap policy binds to cluster-admin.
    leaf admin "/O=system:masters/CN=herald-admin" "extendedKeyUsage=clientAuth"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
    openssl pkey -in sa.key -pubout -out sa.pub
  )
}

kubeconfig() { # FILE SERVER PKI
  local b64="base64 -w0"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: herald-kube
  cluster:
    server: $2
    certificate-authority-data: $($b64 <"$3/ca.crt")
users:
- name: herald-admin
  user:
    client-certificate-data: $($b64 <"$3/admin.crt")
    client-key-data: $($b64 <"$3/admin.key")
contexts:
- name: herald-kube
  context:
    cluster: herald-kube
    user: herald-admin
    namespace: default
current-context: herald-kube
EOF
  chmod 600 "$1"
}

# Metadata for every request (who, verb, resource, response code, and the authorizer's decision and reason in the
# annotations), no bodies: what an RBAC audit needs, at a size a test run can keep. RequestReceived duplicates
# ResponseComplete's metadata and is dropped.
audit_policy() {
  cat >"$1" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
EOF
}

# Added to kube-apiserver's default plugins (which stay on, as in any cluster); none needs a controller to admit.
ADMISSION=NamespaceLifecycle,LimitRanger,ServiceAccount,NodeRestriction,Priority,DefaultTolerationSeconds,PodSecurity
ADMISSION+=,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook

# first_ip CIDR: the address the apiserver gives the `kubernetes` Service (network + 1), for the serving certificate.
first_ip() {
  local net=${1%/*} a b c d
  IFS=. read -r a b c d <<<"$net"
  echo "$a.$b.$c.$((d + 1))"
}

alive() { [ -n "${1:-}" ] && [ -d "/proc/$1" ] && [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$2" ]; }
# started PID EXE LOG: wait until `ip netns exec` and `setsid` have exec'd into EXE (same PID), so `alive` is exact.
started() {
  local i
  for i in $(seq 50); do alive "$1" "$2" && return 0; [ -d "/proc/$1" ] || break; sleep 0.1; done
  exited "$2" "$3"
}
exited() { tail -n 20 "$2" >&2; die "$(basename "$1") exited (log: $2)"; }

# listening NETNS ADDR PORT: is a TCP socket bound there (or on the wildcard)?
listening() {
  in_ns "$1" ss -Hltn "sport = :$3" 2>/dev/null | awk '{print $4}' |
    grep -qE "^(\\*|0\.0\.0\.0|\[::\]|$2):$3\$"
}

# free_ports N: the first of N consecutive TCP ports nothing listens on here, from 20000-32767 (below Linux's
# default ephemeral range, so no outgoing connection holds one).
free_ports() {
  local n=$1 used p i ok
  used=" $(ss -Hltn 2>/dev/null | awk '{n = split($4, a, ":"); print a[n]}' | tr '\n' ' ') "
  while :; do
    p=$((20000 + RANDOM % 12700))
    ok=1
    for ((i = 0; i < n; i++)); do [[ $used == *" $((p + i)) "* ]] && ok=0; done
    [ "$ok" = 1 ] && { echo "$p"; return; }
  done
}

# wait_ready NETNS DIR SERVER ETCD_PID APISERVER_PID TIMEOUT: until /readyz says so (etcd reachable, RBAC bootstrap
# roles, priority classes, CRD informers synced); fails at once when either process exits.
wait_ready() {
  local netns=$1 dir=$2 server=$3 etcd_pid=$4 api_pid=$5 deadline=$((SECONDS + $6))
  until in_ns "$netns" curl -sf --max-time 2 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" \
    --key "$dir/pki/admin.key" "$server/readyz" >/dev/null 2>&1; do
    alive "$etcd_pid" "$ETCD_BIN" || exited "$ETCD_BIN" "$dir/etcd.log"
    alive "$api_pid" "$KUBE_APISERVER_BIN" || exited "$KUBE_APISERVER_BIN" "$dir/kube-apiserver.log"
    [ $SECONDS -lt $deadline ] || { tail -n 20 "$dir/kube-apiserver.log" >&2; die "not ready after $6 s"; }
    sleep 0.2
  done
}

cmd_up() {
  local netns="" addr="" port="" dir="" svc_cidr=203.0.113.224/28 etcd_port="" timeout=120 fg=0 host=0
  local extra=() id own_netns=0 server etcd_url etcd_pid api_pid i t0 cidrs
  while [ $# -gt 0 ]; do
    case $1 in
      --netns) netns=$2; shift 2 ;;
      --host) host=1; shift ;;
      --addr) addr=$2; shift 2 ;;
      --port) port=$2; shift 2 ;;
      --dir) dir=$2; shift 2 ;;
      --service-cidr) svc_cidr=$2; shift 2 ;;
      --etcd-port) etcd_port=$2; shift 2 ;;
      --timeout) timeout=$2; shift 2 ;;
      --foreground) fg=1; shift ;;
      --) shift; extra=("$@"); break ;;
      *) die "up: unknown argument $1 (see the top of $0)" ;;
    esac
  done
  for i in openssl curl flock ss; do
    command -v $i >/dev/null || die "$i not found (Debian: apt-get install openssl curl util-linux iproute2)"
  done
  if [ "$host" = 1 ]; then
    # The caller's own namespace: only a loopback address, which nothing outside this machine reaches.
    [ -z "$netns" ] || die "--host and --netns exclude each other"
    addr=${addr:-127.0.0.1}
    case $addr in 127.*) ;; *) die "--host --addr $addr: use a loopback address (127.0.0.0/8)" ;; esac
    port=${port:-$(free_ports 1)}
    etcd_port=${etcd_port:-$(free_ports 2)}
  else
    need_root up
    addr=${addr:-203.0.113.254} port=${port:-6443} etcd_port=${etcd_port:-2379}
    case $addr in 192.0.2.* | 198.51.100.* | 203.0.113.*) ;;
      *) die "--addr $addr: use documentation addresses only (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)" ;; esac
  fi
  # IPv4 first (the family of the `kubernetes` Service), then optionally IPv6: dual-stack Services.
  IFS=, read -ra cidrs <<<"$svc_cidr"
  case ${cidrs[0]:-} in 192.0.2.* | 198.51.100.* | 203.0.113.*) ;;
    *) die "--service-cidr ${cidrs[0]:-}: use documentation addresses (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)" ;;
  esac
  if [ ${#cidrs[@]} -gt 1 ]; then
    case ${cidrs[1]} in 2001:db8:* | 2001:DB8:*) ;; *) die "--service-cidr ${cidrs[1]}: use 2001:db8::/32 only" ;; esac
    [ ${#cidrs[@]} = 2 ] || die "--service-cidr: one IPv4 CIDR, optionally followed by one IPv6 CIDR"
  fi
  build_bins

  id=$(new_id)
  dir=${dir:-/tmp/$id}
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then die "--dir $dir exists and is not empty"; fi
  mkdir -p "$dir" "$RUN_DIR"
  dir=$(cd "$dir" && pwd)
  ln -s "$dir" "$RUN_DIR/$id"
  state() { printf '%s=%q\n' "$@" >>"$dir/state"; }
  state ID "$id"
  state DIR "$dir"
  state KUBE_APISERVER_BIN "$KUBE_APISERVER_BIN"
  state ETCD_BIN "$ETCD_BIN"
  local qdir
  qdir=$(printf %q "$dir")
  # shellcheck disable=SC2064 # DIR is expanded now, on purpose
  if [ "$fg" = 1 ]; then
    trap "trap - EXIT INT TERM; down_dir $qdir; exit 130" INT
    trap "trap - EXIT INT TERM; down_dir $qdir; exit 143" TERM
    trap "down_dir $qdir" EXIT
  else
    # On failure the processes and the namespace go, the logs stay for a look.
    trap "[ \$? = 0 ] || { down_dir $qdir 1; say 'up failed: logs in '$qdir', remove it when done'; }" EXIT
  fi

  # The network: our own namespace, or the caller's; none with --host (NETNS stays empty).
  if [ "$host" = 0 ] && [ -z "$netns" ]; then netns=$id; fi
  if [ "$host" = 0 ] && ! ip netns list | awk '{print $1}' | grep -qx "$netns"; then
    ip netns add "$netns"
    own_netns=1
  fi
  state NETNS "$netns"
  state OWN_NETNS "$own_netns"
  if [ "$host" = 0 ]; then
    ip -n "$netns" link set lo up
    # The address on the namespace's loopback: reachable from inside at once, and from other namespaces once the
    # caller routes it (a dummy interface would do the same, but not every kernel has the dummy driver).
    if ! ip -n "$netns" -o addr show | grep -q " inet $addr/"; then
      ip -n "$netns" addr add "$addr/32" dev lo
      state ADDED_ADDR "$addr/32"
    fi
  fi

  # Two instances can share a namespace (a test's topology) only on distinct ports.
  for i in "$addr:$port" "127.0.0.1:$etcd_port" "127.0.0.1:$((etcd_port + 1))"; do
    listening "$netns" "${i%:*}" "${i##*:}" && die "$i is taken in namespace $netns: choose another --port/--etcd-port"
  done

  say "certificates and keys in $dir/pki"
  certs "$dir" "$addr" "$(first_ip "${cidrs[0]}")" || die "openssl failed: $dir/pki/openssl.log"
  server=https://$addr:$port
  state SERVER "$server"
  kubeconfig "$dir/admin.kubeconfig" "$server" "$dir/pki"
  audit_policy "$dir/audit-policy.yaml"

  # etcd on the namespace's loopback only, plain HTTP: nothing outside the namespace can reach it (with --host,
  # nothing outside this machine). The data is thrown away with DIR, so fsync is off (tests write a lot; a lost write
  # cannot matter).
  etcd_url=http://127.0.0.1:$etcd_port
  t0=$SECONDS
  say "etcd in ${netns:-the host namespace} ($etcd_url)"
  # env -u: etcd reads ETCD_* variables as flags, and a caller's ETCD_BIN is none.
  ns_prefix "$netns"
  "${IN_NS[@]}" env -u ETCD_BIN setsid "$ETCD_BIN" --name "$id" --data-dir "$dir/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "$id=http://127.0.0.1:$((etcd_port + 1))" \
    --quota-backend-bytes $((1024 * 1024 * 1024)) --unsafe-no-fsync --log-level warn \
    </dev/null >"$dir/etcd.log" 2>&1 &
  etcd_pid=$!
  state ETCD_PID "$etcd_pid"
  started "$etcd_pid" "$ETCD_BIN" "$dir/etcd.log"

  say "kube-apiserver in ${netns:-the host namespace} ($server)"
  # The command line is kept for start-apiserver (an API outage in a test restarts it with the same flags).
  # --host: the `kubernetes` Service's endpoint may not be a loopback address, and there is no other to give it;
  # without kube-proxy nothing would use it.
  local host_flags=()
  if [ "$host" = 1 ]; then host_flags=(--endpoint-reconciler-type=none); fi
  local api_cmd=("$KUBE_APISERVER_BIN"
    --etcd-servers="$etcd_url"
    --bind-address="$addr" --advertise-address="$addr" --secure-port="$port"
    --cert-dir="$dir/pki" --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key"
    --client-ca-file="$dir/pki/ca.crt"
    "--authorization-mode=Node,RBAC"
    --service-account-issuer="$server"
    --service-account-key-file="$dir/pki/sa.pub"
    --service-account-signing-key-file="$dir/pki/sa.key"
    --service-cluster-ip-range="$svc_cidr"
    --enable-admission-plugins="$ADMISSION"
    --allow-privileged=true
    --audit-policy-file="$dir/audit-policy.yaml" --audit-log-path="$dir/audit.log"
    --profiling=false
    "${host_flags[@]}"
    "${extra[@]}")
  printf '%q ' "${api_cmd[@]}" >"$dir/apiserver.cmd"
  "${IN_NS[@]}" setsid "${api_cmd[@]}" </dev/null >"$dir/kube-apiserver.log" 2>&1 &
  api_pid=$!
  state APISERVER_PID "$api_pid"
  started "$api_pid" "$KUBE_APISERVER_BIN" "$dir/kube-apiserver.log"

  wait_ready "$netns" "$dir" "$server" "$etcd_pid" "$api_pid" "$timeout"
  say "ready $((SECONDS - t0)) s after starting etcd:" \
    "${netns:+ip netns exec $netns }kubectl --kubeconfig $dir/admin.kubeconfig get ns"
  cat <<EOF
KUBECONFIG=$dir/admin.kubeconfig
HRDK_ID=$id
HRDK_NETNS=$netns
HRDK_DIR=$dir
HRDK_SERVER=$server
HRDK_ETCD_PID=$etcd_pid
HRDK_APISERVER_PID=$api_pid
EOF
  if [ "$fg" = 1 ]; then
    say "running in the foreground: Ctrl-C stops both and removes ${netns:+$netns and }$dir"
    while alive "$etcd_pid" "$ETCD_BIN" && alive "$api_pid" "$KUBE_APISERVER_BIN"; do sleep 1; done
    say "a process exited: see $dir/etcd.log, $dir/kube-apiserver.log"
    exit 1
  fi
  trap - EXIT
}

# ---- down -------------------------------------------------------------------------------------------------------
# stop PID EXE: SIGTERM, up to 10 s to finish, then SIGKILL (at once with STOP_NOW=1); only if PID still runs EXE
# (PIDs get reused).
STOP_NOW=0
stop() {
  local pid=$1 exe=$2 i
  alive "$pid" "$exe" || return 0
  if [ "$STOP_NOW" = 1 ]; then
    kill -KILL "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do alive "$pid" "$exe" || return 0; sleep 0.1; done
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do alive "$pid" "$exe" || return 0; sleep 0.2; done
  # Still shutting down after 10 s (its graceful wait, on a busy machine): killed, and gone before we return, so a
  # start right after finds the port free.
  kill -KILL "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do alive "$pid" "$exe" || return 0; sleep 0.1; done
  die "$(basename "$exe") (pid $pid) still runs 5 s after SIGKILL"
}

# down_dir DIR [keep]: undo what `up` recorded in DIR/state.
down_dir() {
  local dir=$1 keep=${2:-0} pid
  local ID="" NETNS="" OWN_NETNS=0 ADDED_ADDR="" SERVER="" ETCD_PID="" APISERVER_PID=""
  local KUBE_APISERVER_BIN="" ETCD_BIN=""
  [ -f "$dir/state" ] || { say "$dir: no state file, nothing to do"; return 0; }
  # shellcheck disable=SC1091
  . "$dir/state"
  stop "$APISERVER_PID" "$KUBE_APISERVER_BIN" # first, so it does not log etcd errors on the way out
  stop "$ETCD_PID" "$ETCD_BIN"
  if [ -n "$NETNS" ] && [ "$OWN_NETNS" = 1 ]; then
    for pid in $(ip netns pids "$NETNS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$NETNS" 2>/dev/null || true
  elif [ -n "$NETNS" ] && [ -n "$ADDED_ADDR" ]; then
    ip -n "$NETNS" addr del "$ADDED_ADDR" dev lo 2>/dev/null || true
  fi
  [ -n "$ID" ] && rm -f "$RUN_DIR/$ID"
  local what="left namespace $NETNS (not ours)"
  if [ "$OWN_NETNS" = 1 ]; then what="removed namespace $NETNS"; fi
  if [ -z "$NETNS" ]; then what="host namespace"; fi
  if [ "$keep" = 1 ]; then rm -f "$dir/state"; say "stopped $ID; $what; kept $dir"
  else rm -rf "$dir"; say "stopped $ID; $what; removed $dir"; fi
}

# The running instances' IDs, from RUN_DIR.
instances() {
  local link
  for link in "$RUN_DIR/$PREFIX"*; do [ -L "$link" ] && echo "${link##*/}"; done
  return 0
}

# instance_dir ID|--dir DIR: the DIR of an instance; with nothing, the only running one.
instance_dir() {
  local all
  case ${1:-} in
    --dir) [ -n "${2:-}" ] || die "--dir needs a value"; echo "$2" ;;
    "")
      all=$(instances)
      [ -n "$all" ] || die "no instance running"
      [ "$(wc -l <<<"$all")" = 1 ] || die "several instances run ($(tr '\n' ' ' <<<"$all")): name one, or --all"
      readlink "$RUN_DIR/$all" ;;
    *) [ -L "$RUN_DIR/$1" ] || die "no instance $1 (running: $(instances | tr '\n' ' '))"
      readlink "$RUN_DIR/$1" ;;
  esac
}

cmd_down() {
  local keep=0 args=() all=0 id dir
  while [ $# -gt 0 ]; do
    case $1 in
      --keep-dir) keep=1; shift ;;
      --now) STOP_NOW=1; shift ;;
      --all) all=1; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  if [ "$all" = 1 ]; then
    for id in $(instances); do
      dir=$(readlink "$RUN_DIR/$id")
      need_root_for "$dir" down
      down_dir "$dir" "$keep"
    done
  else
    dir=$(instance_dir "${args[@]}")
    need_root_for "$dir" down
    down_dir "$dir" "$keep"
  fi
}

# select_instance ARGS...: sets SEL_DIR from a leading `ID` or `--dir DIR` (else the only instance) and SEL_SHIFT.
select_instance() {
  if [ "${1:-}" = --dir ]; then SEL_DIR=$(instance_dir --dir "${2:-}"); SEL_SHIFT=2
  elif [[ ${1:-} == "$PREFIX"* ]]; then SEL_DIR=$(instance_dir "$1"); SEL_SHIFT=1
  else SEL_DIR=$(instance_dir); SEL_SHIFT=0; fi
}

cmd_exec() {
  local NETNS
  select_instance "$@"
  shift "$SEL_SHIFT"
  need_root_for "$SEL_DIR" exec
  [ $# -gt 0 ] || die "exec: no command"
  # shellcheck disable=SC1091
  NETNS=$(. "$SEL_DIR/state" && echo "$NETNS")
  ns_prefix "$NETNS"
  KUBECONFIG=$SEL_DIR/admin.kubeconfig exec "${IN_NS[@]}" "$@"
}

# A kubeconfig that authenticates as a ServiceAccount with a bound token from the TokenRequest API (what a pod's
# projected token is), so a client runs under exactly the RBAC rules bound to that account.
cmd_sa_kubeconfig() {
  local NETNS SERVER sa ns name secs out token
  select_instance "$@"
  shift "$SEL_SHIFT"
  need_root_for "$SEL_DIR" sa-kubeconfig
  sa=${1:-}
  secs=${2:-86400}
  [[ $sa == */* ]] || die "usage: $0 sa-kubeconfig [ID | --dir DIR] NAMESPACE/NAME [SECONDS]"
  ns=${sa%%/*}; name=${sa#*/}
  # shellcheck disable=SC1091
  eval "$(. "$SEL_DIR/state" && printf 'NETNS=%q SERVER=%q' "$NETNS" "$SERVER")"
  token=$(in_ns "$NETNS" curl -sS --fail-with-body --cacert "$SEL_DIR/pki/ca.crt" \
    --cert "$SEL_DIR/pki/admin.crt" --key "$SEL_DIR/pki/admin.key" -H 'Content-Type: application/json' \
    -d '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":'"$secs"'}}' \
    "$SERVER/api/v1/namespaces/$ns/serviceaccounts/$name/token") || die "TokenRequest for $sa failed: $token"
  token=$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' <<<"$token")
  [ -n "$token" ] || die "TokenRequest for $sa returned no token"
  out=$SEL_DIR/sa-$ns-$name.kubeconfig
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: herald-kube
  cluster:
    server: $SERVER
    certificate-authority-data: $(base64 -w0 <"$SEL_DIR/pki/ca.crt")
users:
- name: $ns-$name
  user:
    token: $token
contexts:
- name: herald-kube
  context:
    cluster: herald-kube
    user: $ns-$name
    namespace: $ns
current-context: herald-kube
EOF
  chmod 600 "$out"
  echo "$out"
}

# An API outage: kube-apiserver stops, etcd and every object stay. SIGTERM is a restart: it stops listening at once
# and waits for its clients' watches to end (SIGKILL after 10 s); --now is a crash: every connection breaks at once.
# start-apiserver runs it again with the command line `up` kept in DIR/apiserver.cmd.
cmd_stop_apiserver() {
  local APISERVER_PID KUBE_APISERVER_BIN
  if [ "${*: -1}" = --now ]; then STOP_NOW=1; set -- "${@:1:$(($# - 1))}"; fi
  select_instance "$@"
  need_root_for "$SEL_DIR" stop-apiserver
  # shellcheck disable=SC1091
  eval "$(. "$SEL_DIR/state" && printf 'APISERVER_PID=%q KUBE_APISERVER_BIN=%q' "$APISERVER_PID" "$KUBE_APISERVER_BIN")"
  alive "$APISERVER_PID" "$KUBE_APISERVER_BIN" || die "kube-apiserver of $SEL_DIR is not running"
  stop "$APISERVER_PID" "$KUBE_APISERVER_BIN"
  say "stopped kube-apiserver (pid $APISERVER_PID); etcd keeps the objects"
}

cmd_start_apiserver() {
  local NETNS SERVER ETCD_PID ETCD_BIN APISERVER_PID KUBE_APISERVER_BIN api_pid api_cmd
  select_instance "$@"
  need_root_for "$SEL_DIR" start-apiserver
  # shellcheck disable=SC1091
  eval "$(. "$SEL_DIR/state" && printf 'NETNS=%q SERVER=%q ETCD_PID=%q ETCD_BIN=%q APISERVER_PID=%q' \
    "$NETNS" "$SERVER" "$ETCD_PID" "$ETCD_BIN" "$APISERVER_PID"
    printf ' KUBE_APISERVER_BIN=%q' "$KUBE_APISERVER_BIN")"
  if alive "$APISERVER_PID" "$KUBE_APISERVER_BIN"; then die "kube-apiserver of $SEL_DIR runs (pid $APISERVER_PID)"; fi
  alive "$ETCD_PID" "$ETCD_BIN" || die "etcd of $SEL_DIR is not running: start a new instance"
  [ -f "$SEL_DIR/apiserver.cmd" ] || die "$SEL_DIR/apiserver.cmd missing (started by an older $0)"
  eval "api_cmd=($(<"$SEL_DIR/apiserver.cmd"))"
  ns_prefix "$NETNS"
  "${IN_NS[@]}" setsid "${api_cmd[@]}" </dev/null >>"$SEL_DIR/kube-apiserver.log" 2>&1 &
  api_pid=$!
  printf 'APISERVER_PID=%q\n' "$api_pid" >>"$SEL_DIR/state"
  started "$api_pid" "$KUBE_APISERVER_BIN" "$SEL_DIR/kube-apiserver.log"
  wait_ready "$NETNS" "$SEL_DIR" "$SERVER" "$ETCD_PID" "$api_pid" 120
  say "kube-apiserver runs again (pid $api_pid)"
  echo "HRDK_APISERVER_PID=$api_pid"
}

case ${1:-} in
  build) shift; cmd_build "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  sa-kubeconfig) shift; cmd_sa_kubeconfig "$@" ;;
  stop-apiserver) shift; cmd_stop_apiserver "$@" ;;
  start-apiserver) shift; cmd_start_apiserver "$@" ;;
  pin) shift; cmd_pin "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
