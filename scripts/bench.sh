#!/usr/bin/env bash
# Runs every Herald benchmark and prints their tables (not part of CI; numbers go to docs/benchmarks.md).
#   scripts/bench.sh            all of them (the network benchmarks need root)
#   scripts/bench.sh ipam l2    only some: ipam election bgp-codec l2-core allocator lab-apiserver l2 bgp fabric failover
#                               peers chaos
# peers is issue #15: Herald, MetalLB and kube-vip side by side on the real kube-apiserver (it builds MetalLB and
# kube-vip with scripts/peers.sh and the API server with scripts/kube-apiserver.sh; Go and the module proxy needed).
# chaos is issue #16's soak: 30 minutes of random events (HERALD_CHAOS_MINUTES), against lab-apiserver and then the real
# kube-apiserver, each with a random seed it prints (HERALD_CHAOS_SEED replays one).
# failover includes the scale part of issue #19 (1,000, 5,000 and 10,000 Service IPs: failover-bench's default --sizes).
# Criterion benchmarks run short (1 s warm-up, 3 s measurement); timing numbers from a busy machine are upper bounds.
set -euo pipefail
cd "$(dirname "$0")/.."

want=("$@")
selected() { [ ${#want[@]} -eq 0 ] || [[ " ${want[*]} " == *" $1 "* ]]; }
log() { printf '\n==> %s\n' "$*"; }
short=(-- --warm-up-time 1 --measurement-time 3)

selected ipam && { log "allocator core (crates/ipam)"; cargo bench -p herald-ipam --bench alloc "${short[@]}"; cargo bench -p herald-ipam --bench memory; }
selected election && { log "election simulation (crates/election)"; cargo bench -p herald-election --bench election_sim; }
selected bgp-codec && { log "BGP codec (crates/bgp)"; cargo bench -p herald-bgp --bench codec "${short[@]}"; }
selected l2-core && { log "ARP/NDP responder core (crates/l2)"; cargo bench -p herald-l2 --bench responder "${short[@]}"; }
selected allocator && { log "allocator controller against lab-apiserver"; cargo bench -p herald --bench allocator; }
selected lab-apiserver && { log "lab-apiserver"; cargo run --release -q -p herald-lab-apiserver --bin lab-apiserver-bench; }

net=()
selected l2 && net+=(l2-bench)
selected bgp && net+=(bgp-bench)
selected fabric && net+=(fabric-bench)
selected failover && net+=(failover-bench)
selected peers && net+=(peers-bench)
selected chaos && net+=(chaos)
if [ ${#net[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "skipping ${net[*]}: network-namespace benchmarks need root"
    exit 0
  fi
  # The benchmarks (netns-tests), lab-apiserver; `--bins` alone would build only the root package's.
  cargo build --release -p herald-netns-tests --bins -p herald-lab-apiserver
  # The agent as shipped (the dist profile: LTO): its code is part of the resident memory these benchmarks report.
  cargo build --profile dist -p herald --bin herald
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  export HERALD_BIN="$target_dir/dist/herald" LAB_APISERVER_BIN="$target_dir/release/lab-apiserver"
  if [[ " ${net[*]} " == *" peers-bench "* || " ${net[*]} " == *" chaos "* ]]; then
    eval "$(scripts/kube-apiserver.sh build)"
    export KUBE_APISERVER_BIN ETCD_BIN
  fi
  for b in "${net[@]}"; do
    if [ "$b" = chaos ]; then
      seed=()
      [ -z "${HERALD_CHAOS_SEED:-}" ] || seed=(--seed "$HERALD_CHAOS_SEED")
      for server in lab kube; do
        log "chaos: ${HERALD_CHAOS_MINUTES:-30} minutes of random events against $server"
        "$target_dir/release/chaos" --minutes "${HERALD_CHAOS_MINUTES:-30}" --apiserver "$server" "${seed[@]}"
      done
      continue
    fi
    log "$b (network namespaces, real clients and routers)"
    "$target_dir/release/$b"
    if [ "$b" = peers-bench ]; then
      log "peers-bench --tuned: each project's documented faster timings (failover only)"
      "$target_dir/release/$b" --tuned --only kill,term,link
    fi
  done
fi
