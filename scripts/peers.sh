#!/usr/bin/env bash
# The load balancers Herald is measured against (issue #15, docs/peers.md), built from their published Go modules at
# the releases pinned in tools/peers/: MetalLB (controller and speaker) and kube-vip. Nothing of theirs is committed:
# the go.mod/go.sum files there are ours, the code comes from the module proxy.
#
#   scripts/peers.sh build
#       build the pinned binaries once (cached; later runs take milliseconds) and print `KEY=path` lines:
#       METALLB_CONTROLLER_BIN, METALLB_SPEAKER_BIN, KUBE_VIP_BIN, and METALLB_MODULE_DIR (the module's source in
#       Go's module cache, where its manifests are)
#   scripts/peers.sh manifests DIR
#       write what each project's own manifests give a cluster, for `kubectl apply -f`: DIR/metallb.yaml (from
#       config/manifests/metallb-native.yaml: the namespace, CRDs, ServiceAccounts and RBAC, without the webhook,
#       Deployment and DaemonSet, which the harness replaces by processes) and DIR/kube-vip.yaml (`kube-vip manifest
#       rbac`)
#   scripts/peers.sh versions
#       the pinned versions
#
# Environment: HERALD_CACHE (default ~/.cache/herald) holds the binaries under peers/. Go's module and build caches
# are Go's own (GOMODCACHE, GOCACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PEERS=$REPO/tools/peers
CACHE_ROOT=${HERALD_CACHE:-${HOME:-/root}/.cache/herald}/peers

die() { printf 'peers.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*" >&2; }

# The pinned version of MODULE in GOMOD (no Go invocation).
mod_version() { sed -n "s#^[[:space:]]*\(require[[:space:]]\+\)\?$2 \(v[^ ]*\).*#\2#p" "$1" | head -1; }

# build_one NAME MODDIR PKG=OUT...: builds each package of the module in MODDIR into the cache directory of its pin,
# unless there already; sets DIR to that directory.
build_one() {
  local name=$1 moddir=$2 go_ver key tmp pkg out
  shift 2
  command -v go >/dev/null || die "go not found: install Go $(sed -n 's/^go //p' "$moddir/go.mod")+"
  go_ver=$(GOTOOLCHAIN=local go env GOVERSION)
  key=$({ cat "$moddir/go.mod" "$moddir/go.sum"; echo "$go_ver $*"; } | sha256sum | cut -c1-12)
  DIR=$CACHE_ROOT/$name-$key
  local missing=0
  for pkg in "$@"; do [ -x "$DIR/${pkg#*=}" ] || missing=1; done
  if [ "$missing" = 0 ]; then touch "$DIR"; return; fi
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.lock"
  flock 9
  say "building $name with $go_ver (first time for this pin: minutes)"
  tmp=$(mktemp -d "$CACHE_ROOT/.build-XXXXXX")
  for pkg in "$@"; do
    out=${pkg#*=}
    pkg=${pkg%%=*}
    # GOTOOLCHAIN=local: never fetch another Go; -mod=readonly: go.mod/go.sum are the pins, never rewritten.
    (cd "$moddir" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" nice -n 19 \
      go build -trimpath -ldflags "-s -w" -o "$tmp/$out" "$pkg") || { rm -rf "$tmp"; die "building $pkg failed"; }
  done
  chmod 755 "$tmp"
  rm -rf "$DIR" && mv "$tmp" "$DIR"
  exec 9>&-
}

module_dir() { # module_dir MODDIR MODULE: the module's source directory in Go's module cache (downloaded if needed)
  local v
  v=$(mod_version "$1/go.mod" "$2")
  (cd "$1" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go mod download -json "$2@$v") |
    sed -n 's/.*"Dir": "\(.*\)",/\1/p'
}

build() {
  build_one "metallb-$(mod_version "$PEERS/metallb/go.mod" go.universe.tf/metallb)" "$PEERS/metallb" \
    go.universe.tf/metallb/controller=metallb-controller go.universe.tf/metallb/speaker=metallb-speaker
  METALLB_CONTROLLER_BIN=$DIR/metallb-controller
  METALLB_SPEAKER_BIN=$DIR/metallb-speaker
  build_one "kube-vip-$(mod_version "$PEERS/kube-vip/go.mod" github.com/kube-vip/kube-vip)" "$PEERS/kube-vip" \
    github.com/kube-vip/kube-vip=kube-vip
  KUBE_VIP_BIN=$DIR/kube-vip
  METALLB_MODULE_DIR=$(module_dir "$PEERS/metallb" go.universe.tf/metallb)
  [ -d "$METALLB_MODULE_DIR" ] || die "cannot find MetalLB's module source"
}

cmd_build() {
  build
  echo "METALLB_CONTROLLER_BIN=$METALLB_CONTROLLER_BIN"
  echo "METALLB_SPEAKER_BIN=$METALLB_SPEAKER_BIN"
  echo "KUBE_VIP_BIN=$KUBE_VIP_BIN"
  echo "METALLB_MODULE_DIR=$METALLB_MODULE_DIR"
}

cmd_manifests() {
  local out=${1:-}
  [ -n "$out" ] || die "usage: $0 manifests DIR"
  build
  mkdir -p "$out"
  # The native manifest's documents of these kinds; the rest (webhook configuration, Deployment, DaemonSet, the
  # webhook's Service and Secret) is what the harness replaces.
  python3 - "$METALLB_MODULE_DIR/config/manifests/metallb-native.yaml" "$out/metallb.yaml" <<'PY'
import re, sys
keep = {"Namespace", "CustomResourceDefinition", "ServiceAccount", "Role", "ClusterRole", "RoleBinding",
        "ClusterRoleBinding"}
docs = re.split(r"^---\s*$", open(sys.argv[1]).read(), flags=re.M)
kept = [d.strip() for d in docs if (m := re.search(r"^kind: (\S+)", d, re.M)) and m.group(1) in keep]
# MetalLB's ASN fields say `format: int32` with `maximum: 4294967295`; kube-apiserver 1.37 refuses every object with
# such a field ("Maximum boundary value must be of type integer with format int32"). Dropping the format is the one
# change made to their manifests (docs/peers.md).
fixed = [re.sub(r"format: int32\n(\s+)maximum: 4294967295", r"maximum: 4294967295", d) for d in kept]
if fixed != kept:
    print("metallb.yaml: dropped `format: int32` from the fields with maximum 4294967295 (ASNs)", file=sys.stderr)
kept = fixed
if not any("kind: CustomResourceDefinition" in d for d in kept):
    sys.exit("no CRDs in " + sys.argv[1])
open(sys.argv[2], "w").write("\n---\n".join(kept) + "\n")
print(f"{sys.argv[2]}: {len(kept)} objects from {sys.argv[1]}", file=sys.stderr)
PY
  "$KUBE_VIP_BIN" manifest rbac >"$out/kube-vip.yaml"
  say "$out/kube-vip.yaml: kube-vip's RBAC (kube-vip manifest rbac)"
}

cmd_versions() {
  echo "metallb $(mod_version "$PEERS/metallb/go.mod" go.universe.tf/metallb)"
  echo "kube-vip $(mod_version "$PEERS/kube-vip/go.mod" github.com/kube-vip/kube-vip)"
}

case ${1:-} in
  build) cmd_build ;;
  manifests) shift; cmd_manifests "$@" ;;
  versions) cmd_versions ;;
  *) die "usage: $0 build | manifests DIR | versions" ;;
esac
