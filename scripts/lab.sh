#!/usr/bin/env bash
# Herald's one-command lab: a three-node "cluster" in network namespaces on this machine, no Kubernetes needed.
#
#   sudo scripts/lab.sh [up] [--detach] [--apiserver lab|kube] [--mode l2|bgp]
#                                         build, start the lab, show Layer 2 failover (--mode bgp: BGP mode in two
#                                         racks under a spine, and node loss); Ctrl-C removes everything
#   sudo scripts/lab.sh down              remove everything the lab created (namespaces, processes, files)
#   sudo scripts/lab.sh status            objects, leases and who answers now
#   sudo scripts/lab.sh restart NODE      (re)start the herald agent on NODE (node1, node2, node3)
#   sudo scripts/lab.sh kubectl ARGS...   kubectl against the lab's API server
#   sudo scripts/lab.sh exec NS CMD...    run CMD in namespace NS (api, node1, node2, node3, client, sw;
#                                         with --mode bgp also spine, leaf1, leaf2)
#
# What runs (see docs/lab.md): lab-apiserver (an in-memory Kubernetes API server) in namespace hlab-api, or with
# --apiserver kube the real kube-apiserver + etcd (scripts/kube-apiserver.sh; Herald installed from deploy/, the
# agents run as its ServiceAccount under RBAC), one `herald agent` per node namespace hlab-node1..3, and a client in
# hlab-client; the nodes and the client share the LAN bridge `lan` (192.0.2.0/24, 2001:db8:1::/64), the agents
# reach the API over the bridge `mgmt` (198.51.100.0/24). Each node stands in for kube-proxy (an nftables redirect of
# the pool's port 80, as kube-proxy's iptables/nftables modes do) and serves its own name over HTTP, so the client
# sees which node answered ARP/NDP and which node took its traffic.
#
# Environment: HERALD_BIN / LAB_APISERVER_BIN use prebuilt binaries (no cargo build); CARGO_TARGET_DIR is honoured;
# KUBE_APISERVER_BIN / ETCD_BIN as for scripts/kube-apiserver.sh (else it builds them once with Go: minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PREFIX=hlab-
STATE=${HERALD_LAB_DIR:-/tmp/hlab}
KUBECONFIG_FILE=$STATE/kubeconfig        # kubectl's: cluster-admin of the real server (lab-apiserver: no authorization)
AGENT_KUBECONFIG=$STATE/agent.kubeconfig # the agents': on the real server the herald-system/herald ServiceAccount's token
KUBE_DIR=$STATE/kube                     # the real server's DIR (scripts/kube-apiserver.sh up --dir)
NODES=(node1 node2 node3)
API_IP=198.51.100.1

if [ -t 1 ]; then BOLD=$'\033[1m'; DIM=$'\033[2m'; OFF=$'\033[0m'; else BOLD=; DIM=; OFF=; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$OFF"; }
info() { printf '    %s\n' "$*"; }
die() { printf '%serror:%s %s\n' "$BOLD" "$OFF" "$*" >&2; exit 1; }
run() { printf '%s$ %s%s\n' "$DIM" "$*" "$OFF"; "$@"; }

need_root() { [ "$(id -u)" = 0 ] || die "the lab creates network namespaces: run it as root (sudo $0 $*)"; }
nsx() { local ns=$1; shift; ip netns exec "$PREFIX$ns" "$@"; }
kc() { nsx api kubectl --kubeconfig "$KUBECONFIG_FILE" --cache-dir "$STATE/kube-cache" "$@"; }

# ---- teardown ---------------------------------------------------------------------------------------------------
down() {
  local ns pid
  # The real server first: its `down` stops it and drops its run record (the namespace is ours to remove). --now: its
  # data goes anyway, and a graceful stop would wait for the agents' watches.
  if [ -f "$KUBE_DIR/state" ]; then "$REPO/scripts/kube-apiserver.sh" down --dir "$KUBE_DIR" --now || true; fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
  done
  sleep 0.3
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$STATE" /var/run/frr/"$PREFIX"*
}

# ---- prerequisites ----------------------------------------------------------------------------------------------
install_tools() {
  # shellcheck source=scripts/lib.sh
  . "$REPO/scripts/lib.sh"
  install_missing ip=iproute2 arping=arping ndisc6=ndisc6 python3=python3 curl=curl kubectl=kubectl nft=nftables ||
    die "cannot install the lab's tools"
  info "ip, arping, ndisc6, python3, curl, kubectl, nft: present"
  if [ "$APISERVER" = kube ]; then
    install_missing openssl=openssl flock=util-linux ss=iproute2 || die "cannot install what kube-apiserver.sh needs"
    info "openssl, flock, ss: present"
  fi
}

build() {
  if [ -n "${HERALD_BIN:-}" ] && [ -n "${LAB_APISERVER_BIN:-}" ]; then
    info "using HERALD_BIN=$HERALD_BIN and LAB_APISERVER_BIN=$LAB_APISERVER_BIN"
    return
  fi
  command -v cargo >/dev/null || die "cargo not found: install Rust 1.89 or newer (https://rustup.rs), then rerun"
  run cargo build --locked -p herald -p herald-lab-apiserver --bin herald --bin lab-apiserver
  local target=${CARGO_TARGET_DIR:-$REPO/target}
  HERALD_BIN=$target/debug/herald
  LAB_APISERVER_BIN=$target/debug/lab-apiserver
}

# ---- pieces -----------------------------------------------------------------------------------------------------
netns() { ip netns add "$PREFIX$1"; ip -n "$PREFIX$1" link set lo up; }
# attach BRIDGE PORT NS IFNAME: a veth from the switch's BRIDGE to NS
attach() {
  ip -n "${PREFIX}sw" link add "$2" type veth peer name "$4" netns "$PREFIX$3"
  ip -n "${PREFIX}sw" link set "$2" master "$1" up
  ip -n "$PREFIX$3" link set "$4" up
}
# start NAME NS CMD...: a background process inside NS, logging to $STATE/NAME.log
start() {
  local name=$1 ns=$2; shift 2
  ip netns exec "$PREFIX$ns" "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  disown $!
}
wait_for() { # wait_for SECONDS DESCRIPTION CMD...
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}
crds_established() { # every CRD on the server has Established=True
  local rows
  rows=$(kc get crd -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\n"}{end}') || return 1
  ! grep -qv '=True$' <<<"$rows"
}
mac_of() { ip -n "$PREFIX$1" -br link show dev eth0 | awk '{print $3}'; }
node_of_mac() { local n; for n in "${NODES[@]}"; do [ "$(mac_of "$n")" = "$1" ] && { echo "$n"; return; }; done; echo "?"; }
lease_holder() { # the node holding IP's lease
  local slug=${1//[.:]/-}
  [[ $slug == -* ]] && slug=0$slug
  [[ $slug == *- ]] && slug=${slug}0
  kc get leases -n herald-system -l "herald.dev/ip=$slug" -o jsonpath='{.items[0].spec.holderIdentity}' 2>/dev/null | cut -d/ -f1
}
has_holder() { [ -n "$(lease_holder "$1")" ]; }
start_agent() {
  local n=$1 i=${1#node}
  start "agent-$n" "$n" env KUBECONFIG="$AGENT_KUBECONFIG" RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 \
    "$HERALD_BIN" agent --node-name "$n" --namespace herald-system --metrics-addr "198.51.100.1$i:7472"
}
show_state() {
  run kc get eip,svc -A
  run kc get leases -n herald-system -l herald.dev/lease=ip \
    -o custom-columns='IP LEASE:.metadata.name,HOLDER:.spec.holderIdentity,TRANSITIONS:.spec.leaseTransitions'
  info "announced-by: $(kc get svc web -o jsonpath='{.metadata.annotations.herald\.dev/announced-by}')"
}

# ---- the API server ---------------------------------------------------------------------------------------------
start_lab_apiserver() {
  step "Starting lab-apiserver on $API_IP:6443 (namespace ${PREFIX}api)"
  NO_COLOR=1 ip netns exec "${PREFIX}api" "$LAB_APISERVER_BIN" --listen "$API_IP:6443" --kubeconfig-out "$KUBECONFIG_FILE" \
    --state-file "$STATE/apiserver-state.json" >"$STATE/apiserver.out" 2>"$STATE/apiserver.log" &
  echo $! >"$STATE/apiserver.pid"
  disown $!
  wait_for 20 "lab-apiserver" test -s "$KUBECONFIG_FILE"
  wait_for 20 "lab-apiserver to answer" kc get --raw /healthz
  ln -s kubeconfig "$AGENT_KUBECONFIG" # no authentication: the agents use the same
  info "listening on $(head -n1 "$STATE/apiserver.out"); kubeconfig $KUBECONFIG_FILE"

  step "Cluster objects: Nodes, namespace herald-system, Herald's CRDs"
  run kc apply -f deploy/examples/lab-nodes.yaml
  "$HERALD_BIN" crds | kc apply -f -
}

# The real kube-apiserver and etcd in the api namespace, on the same address; Herald installed as a user installs it,
# and the agents run as its ServiceAccount with a token from the TokenRequest API (RBAC of deploy/herald.yaml).
start_kube() {
  step "Building kube-apiserver and etcd (scripts/kube-apiserver.sh build; minutes the first time, cached after)"
  "$REPO/scripts/kube-apiserver.sh" build | sed 's/^/    /'
  step "Starting the real kube-apiserver on $API_IP:6443 (namespace ${PREFIX}api)"
  # Dual-stack Services need an IPv6 service range too (no kube-proxy: cluster IPs never reach a wire).
  "$REPO/scripts/kube-apiserver.sh" up --netns "${PREFIX}api" --addr "$API_IP" --port 6443 --dir "$KUBE_DIR" \
    --service-cidr 203.0.113.224/28,2001:db8:ffff::/112 >"$STATE/kube.env"
  cp "$KUBE_DIR/admin.kubeconfig" "$KUBECONFIG_FILE"
  info "$(kc version 2>/dev/null | grep -i server || true); logs and audit log in $KUBE_DIR"

  step "Cluster objects: Herald's CRDs, Nodes, deploy/herald.yaml (namespace, ServiceAccount, RBAC, DaemonSet)"
  run kc apply -f deploy/crds/herald.dev.yaml
  # Not `kubectl wait --for condition=established crd --all`: it fails at once on a CRD stored but not yet given
  # any condition, which a CRD just applied can be.
  wait_for 60 "the CRDs to be established" crds_established
  # Before deploy/herald.yaml, whose herald-system Namespace (with its pod-security label) is the one that stays.
  run kc apply -f deploy/examples/lab-nodes.yaml
  run kc apply -f deploy/herald.yaml
  info "no scheduler or kubelet: the DaemonSet never runs a pod; the agents below run as processes"
  local sa_kubeconfig
  sa_kubeconfig=$("$REPO/scripts/kube-apiserver.sh" sa-kubeconfig --dir "$KUBE_DIR" herald-system/herald)
  ln -s "$sa_kubeconfig" "$AGENT_KUBECONFIG"
  wait_for 20 "RBAC to know the ServiceAccount" \
    kc auth can-i update leases -n herald-system --as system:serviceaccount:herald-system:herald
  info "agents authenticate as system:serviceaccount:herald-system:herald (kubeconfig $AGENT_KUBECONFIG)"
}

# ---- up ---------------------------------------------------------------------------------------------------------
begin_lab() { # removes any previous lab; from here on, any failure or Ctrl-C removes the lab again
  step "Removing any previous lab"
  down
  mkdir -p "$STATE"
  trap 'on_exit $?' EXIT
  trap 'exit 130' INT TERM
}
stay_or_leave() { # after the demonstration: leave the lab running (--detach, or no terminal), or wait for Ctrl-C
  if [ "$1" = 1 ] || [ ! -t 0 ]; then
    trap - EXIT INT TERM
    info "left running; remove it with: sudo $0 down"
    return
  fi
  info "press Ctrl-C to remove the lab (or leave it with --detach next time)"
  while sleep 3600; do :; done
}
on_exit() {
  if [ "$1" != 0 ] && [ "$1" != 130 ]; then
    local f
    for f in "$STATE"/agent-*.log "$STATE"/apiserver.log "$KUBE_DIR"/kube-apiserver.log; do
      [ -f "$f" ] || continue
      printf '\n%s--- last lines of %s ---%s\n' "$BOLD" "$f" "$OFF"
      tail -n 15 "$f"
    done
    if [ -n "${HERALD_LAB_KEEP_ON_ERROR:-}" ]; then info "HERALD_LAB_KEEP_ON_ERROR set: lab left running"; return; fi
  fi
  echo
  step "Removing the lab"
  down
  info "done"
}

up() {
  local detach=$1
  begin_lab

  step "Prerequisites"
  install_tools
  step "Building herald and lab-apiserver"
  build
  echo "$APISERVER" >"$STATE/apiserver"

  step "Network: namespaces ${PREFIX}{sw,api,node1,node2,node3,client}; bridges mgmt (198.51.100.0/24) and lan (192.0.2.0/24, 2001:db8:1::/64)"
  netns sw
  ip -n "${PREFIX}sw" link add mgmt type bridge mcast_snooping 0
  ip -n "${PREFIX}sw" link add lan type bridge mcast_snooping 0
  ip -n "${PREFIX}sw" link set mgmt up
  ip -n "${PREFIX}sw" link set lan up
  netns api
  attach mgmt m-api api eth0
  ip -n "${PREFIX}api" addr add "$API_IP/24" dev eth0
  local n i
  for n in "${NODES[@]}"; do
    i=${n#node}
    netns "$n"
    attach lan "l-$n" "$n" eth0
    attach mgmt "m-$n" "$n" eth1
    ip -n "$PREFIX$n" link set eth0 address "02:00:00:00:00:1$i"
    ip -n "$PREFIX$n" addr add "192.0.2.1$i/24" dev eth0
    ip -n "$PREFIX$n" addr add "2001:db8:1::1$i/64" dev eth0 nodad
    ip -n "$PREFIX$n" addr add "198.51.100.1$i/24" dev eth1
    # kube-proxy stand-in (iptables/nftables mode): traffic to the pool's addresses on port 80 goes to this node's
    # web server. The Service IPs are on no interface, so only Herald answers ARP/NDP for them.
    nsx "$n" nft -f - <<'NFT'
table inet kube-proxy-lab {
  chain prerouting {
    type nat hook prerouting priority dstnat;
    ip daddr 192.0.2.200-192.0.2.220 tcp dport 80 redirect
    ip6 daddr 2001:db8:1::200-2001:db8:1::220 tcp dport 80 redirect
  }
}
NFT
    mkdir -p "$STATE/www-$n"
    echo "hello from $n" >"$STATE/www-$n/index.html"
    start "http-$n" "$n" python3 -m http.server 80 --bind :: --directory "$STATE/www-$n"
    info "$n: eth0 02:00:00:00:00:1$i 192.0.2.1$i 2001:db8:1::1$i, eth1 198.51.100.1$i"
  done
  netns client
  attach lan l-client client eth0
  ip -n "${PREFIX}client" link set eth0 address 02:00:00:00:00:64
  ip -n "${PREFIX}client" addr add 192.0.2.100/24 dev eth0
  ip -n "${PREFIX}client" addr add 2001:db8:1::100/64 dev eth0 nodad
  info "client: eth0 192.0.2.100 2001:db8:1::100"

  if [ "$APISERVER" = kube ]; then start_kube; else start_lab_apiserver; fi

  printf 'HERALD_BIN=%q\n' "$HERALD_BIN" >"$STATE/bins"
  step "Starting one herald agent per node"
  for n in "${NODES[@]}"; do start_agent "$n"; done
  for n in "${NODES[@]}"; do
    wait_for 60 "the agent on $n (log: $STATE/agent-$n.log)" grep -q "announcer started" "$STATE/agent-$n.log"
    info "$n: herald agent running (pid $(cat "$STATE/agent-$n.pid"), log $STATE/agent-$n.log)"
  done

  step "Applying the example Eip and Service"
  run kc apply -f deploy/examples/lab-eip.yaml -f deploy/examples/lab-service.yaml
  wait_for 30 "the Service's IPs" sh -c "[ \$(ip netns exec ${PREFIX}api kubectl --kubeconfig $KUBECONFIG_FILE get svc web -o jsonpath='{.status.loadBalancer.ingress[*].ip}' | wc -w) -ge 2 ]"
  local ips v4 v6
  ips=$(kc get svc web -o jsonpath='{.status.loadBalancer.ingress[*].ip}')
  for ip in $ips; do case $ip in *:*) v6=$ip ;; *) v4=$ip ;; esac; done
  info "web got $v4 and $v6"
  wait_for 20 "a lease holder for $v4" has_holder "$v4"
  wait_for 20 "a lease holder for $v6" has_holder "$v6"
  sleep 1
  show_state

  step "The client reaches the Service IPs"
  # A new IP is first probed for conflicts (about 1.5 s) before its node answers.
  local mac4='' mac6='' deadline=$((SECONDS + 15))
  while { [ -z "$mac4" ] || [ -z "$mac6" ]; } && [ $SECONDS -lt $deadline ]; do
    [ -n "$mac4" ] || mac4=$(nsx client arping -i eth0 -c 1 -w 1 "$v4" | awk '/bytes from/ {print $4; exit}' || true)
    [ -n "$mac6" ] || mac6=$(nsx client ndisc6 -q -n -r 1 -w 1000 "$v6" eth0 || true)
  done
  info "arping $v4: answered by $mac4 = $(node_of_mac "$mac4")"
  info "ndisc6 $v6: answered by $mac6 = $(node_of_mac "$mac6")"
  info "curl http://$v4/: $(nsx client curl -sS --max-time 3 "http://$v4/" || echo "(no answer)")"
  info "curl http://[$v6]/: $(nsx client curl -sS --max-time 3 "http://[$v6]/" || echo "(no answer)")"

  local victim
  victim=$(lease_holder "$v4")
  step "Failover: kill -9 the agent on $victim (holder of $v4) while the client arpings every 20 ms"
  # Each reply line gets the time it arrived ($EPOCHREALTIME: no process per line).
  (nsx client arping -i eth0 -W 0.02 "$v4" 2>&1 | while IFS= read -r line; do echo "$EPOCHREALTIME $line"; done) \
    >"$STATE/failover-probe.log" &
  disown $!
  # The client's view, live: a line a second, which node's MAC answered how many requests and how many got none.
  local macs='' m
  for m in "${NODES[@]}"; do macs+="$(mac_of "$m")=$m "; done
  info "the client's view, a line a second (an ARP request every 20 ms):"
  tail -n +1 -f "$STATE/failover-probe.log" 2>/dev/null | awk -v start="$EPOCHREALTIME" -v macs="$macs" '
    BEGIN { n = split(macs, pairs, " "); for (i = 1; i <= n; i++) { split(pairs[i], kv, "="); name[kv[1]] = kv[2] } }
    { sec = int($1 - start) }
    sec > cur {
      line = "    client: t=" cur + 1
      for (k in seen) line = line " " (k in name ? name[k] : k) "=" seen[k]
      print line " lost=" lost + 0; fflush()
      delete seen; lost = 0; cur = sec
    }
    /bytes from/ { seen[$5]++ }
    /Timeout/ { lost++ }' &
  local live=$!
  sleep 2
  local killed=$EPOCHREALTIME
  run kill -9 "$(cat "$STATE/agent-$victim.pid")"  # the agent on $victim
  local old_mac deadline=$((SECONDS + 20))
  old_mac=$(mac_of "$victim")
  until awk -v t="$killed" -v old="$old_mac" '$1 > t && /bytes from/ && $5 != old {found=1} END {exit !found}' \
      "$STATE/failover-probe.log"; do
    [ $SECONDS -lt $deadline ] || break
    sleep 0.1
  done
  sleep 2
  ip netns pids "${PREFIX}client" | xargs -r kill -KILL 2>/dev/null || true
  kill "$live" 2>/dev/null || true
  # Longest time between two answers around the kill, and who answered after it.
  local report
  report=$(awk -v t="$killed" '
    /bytes from/ { if (last != "" && $1 > t - 1) { gap = $1 - last; if (gap > max) max = gap }
                   last = $1; if ($1 > t) after = $5 }
    END { printf "%.0f %s\n", max * 1000, after }' "$STATE/failover-probe.log")
  local gap=${report% *} new_mac=${report#* }
  if [ -z "$new_mac" ] || [ "$new_mac" = "$old_mac" ]; then
    info "no other node answered within 20 s (see $STATE/agent-*.log)"
  else
    info "the client saw no answer for ${BOLD}${gap} ms${OFF}; $(node_of_mac "$new_mac") ($new_mac) took over"
  fi
  sleep 1
  show_state
  info "curl http://$v4/: $(nsx client curl -sS --max-time 3 "http://$v4/" || true)"

  step "Restarting the agent on $victim (the IP stays where it is: no flapping back)"
  start_agent "$victim"
  wait_for 60 "the agent on $victim" grep -q "announcer started" "$STATE/agent-$victim.log"
  info "$victim: herald agent running again"

  step "The lab is running"
  cat <<EOF
    kubectl:   sudo $0 kubectl get eip,svc,leases -A
    a client:  sudo $0 exec client arping -i eth0 -c 3 $v4
               sudo $0 exec client curl http://$v4/
    logs:      $STATE/agent-node{1,2,3}.log, $(if [ "$APISERVER" = kube ]; then
                 echo "$KUBE_DIR/kube-apiserver.log, $KUBE_DIR/audit.log (who asked what, RBAC's decision)"
               else echo "$STATE/apiserver.log"; fi)
    metrics:   sudo $0 exec api curl -s http://198.51.100.11:7472/metrics
    failover:  sudo kill -9 \$(cat $STATE/agent-$(lease_holder "$v4").pid)   # then: sudo $0 restart $(lease_holder "$v4")
EOF
  stay_or_leave "$detach"
}

# ---- up --mode bgp -----------------------------------------------------------------------------------------------
# The rack topology of netns-tests/src/fabric.rs (the same router configurations, scripts/lab/bgp/): a spine (FRR)
# with the client behind it, leaf1 (FRR) over node1 and node2 in rack1, leaf2 (BIRD) over node3 in rack2.
frr_start() { # frr_start NS CONF: zebra, bfdd and bgpd in NS, instance hlab-NS, files in $STATE/frr-NS
  local ns=$1 conf=$2 dir=$STATE/frr-$1 run=/var/run/frr/$PREFIX$1
  mkdir -p "$dir" "$run"
  cp "$conf" "$dir/bgpd.conf"
  echo "hostname $ns" >"$dir/zebra.conf"
  : >"$dir/bfdd.conf"
  chown -R frr:frr "$dir" "$run"
  local d
  for d in zebra bfdd bgpd; do
    start "$d-$ns" "$ns" "/usr/lib/frr/$d" -N "$PREFIX$ns" -i "$dir/$d.pid" --log "file:$dir/$d.log" -f "$dir/$d.conf"
    [ "$d" != zebra ] || wait_for 10 "zebra in $ns" test -S "$run/zserv.api"
  done
}
next_hops() { # next_hops NS PREFIX: the kernel's next hops for PREFIX in NS, sorted, space-separated
  ip -n "$PREFIX$1" -4 route show "$2" | awk '{for (i = 1; i < NF; i++) if ($i == "via") print $(i + 1)}' | sort | xargs
}
hops_are() { [ "$(next_hops "$1" "$2")" = "$3" ]; }
bfd_up_at_leaf2() { nsx leaf2 birdc -s "$STATE/bird-leaf2.ctl" show bfd sessions | grep -q '^192.0.2.73 .* Up '; }
spine_has_both_leaves() { [ "$(nsx spine vtysh -N "${PREFIX}spine" -c 'show bgp summary json' | grep -c '"state":"Established"')" -ge 2 ]; }
service_ip() { kc get svc web -o jsonpath='{.status.loadBalancer.ingress[0].ip}'; }
has_service_ip() { [ -n "$(service_ip)" ]; }
RACK_OF=([1]=rack1 [2]=rack1 [3]=rack2)
RACK_ADDR=([1]=192.0.2.11 [2]=192.0.2.12 [3]=192.0.2.73)
LEAF_OF=([1]=192.0.2.1 [2]=192.0.2.1 [3]=192.0.2.65)
LEAF_RACK_ADDR=([1]=192.0.2.1 [2]=192.0.2.65)

up_bgp() {
  local detach=$1
  begin_lab
  echo bgp >"$STATE/mode"

  step "Prerequisites"
  install_tools
  install_missing /usr/lib/frr/bgpd=frr vtysh=frr bird=bird2 birdc=bird2 || die "cannot install FRR and BIRD"
  info "FRR, BIRD: present"
  step "Building herald and lab-apiserver"
  build
  echo "$APISERVER" >"$STATE/apiserver"

  step "Network: a spine with the client behind it, leaf1 (rack1: node1, node2), leaf2 (rack2: node3); management network 198.51.100.0/24"
  netns sw
  local b
  for b in mgmt rack1 rack2; do
    ip -n "${PREFIX}sw" link add "$b" type bridge mcast_snooping 0
    ip -n "${PREFIX}sw" link set "$b" up
  done
  netns api
  attach mgmt m-api api eth0
  ip -n "${PREFIX}api" addr add "$API_IP/24" dev eth0
  netns spine
  netns client
  ip -n "${PREFIX}spine" link add eth0 type veth peer name eth0 netns "${PREFIX}client"
  ip -n "${PREFIX}spine" link set eth0 up
  ip -n "${PREFIX}client" link set eth0 up
  ip -n "${PREFIX}spine" addr add 192.0.2.193/26 dev eth0
  ip -n "${PREFIX}client" addr add 192.0.2.200/26 dev eth0
  ip -n "${PREFIX}client" route add default via 192.0.2.193
  # ECMP hashes on ports too; the leaves hash other fields than the spine, or a leaf would send every flow the spine
  # gave it to one node (both would choose by the same hash).
  nsx spine sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
  info "spine: 192.0.2.193 towards the client (192.0.2.200)"
  local r leaf up_spine up_leaf
  for r in 1 2; do
    leaf=leaf$r
    netns "$leaf"
    ip -n "${PREFIX}spine" link add "eth$r" type veth peer name eth1 netns "$PREFIX$leaf"
    ip -n "${PREFIX}spine" link set "eth$r" up
    ip -n "$PREFIX$leaf" link set eth1 up
    up_spine=192.0.2.$((125 + 4 * r)) up_leaf=192.0.2.$((126 + 4 * r))
    ip -n "${PREFIX}spine" addr add "$up_spine/30" dev "eth$r"
    ip -n "$PREFIX$leaf" addr add "$up_leaf/30" dev eth1
    attach "rack$r" "l-$leaf" "$leaf" eth0
    ip -n "$PREFIX$leaf" addr add "${LEAF_RACK_ADDR[$r]}/26" dev eth0
    ip -n "$PREFIX$leaf" route add default via "$up_spine"
    nsx "$leaf" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=3 \
      net.ipv4.fib_multipath_hash_fields=0x11
    info "$leaf: ${LEAF_RACK_ADDR[$r]} in rack$r, $up_leaf towards the spine ($up_spine)"
  done
  local n i
  for n in "${NODES[@]}"; do
    i=${n#node}
    netns "$n"
    attach "${RACK_OF[$i]}" "r-$n" "$n" eth0
    attach mgmt "m-$n" "$n" eth1
    ip -n "$PREFIX$n" addr add "${RACK_ADDR[$i]}/26" dev eth0
    ip -n "$PREFIX$n" addr add "198.51.100.1$i/24" dev eth1
    ip -n "$PREFIX$n" route add default via "${LEAF_OF[$i]}"
    # kube-proxy stand-in: the pool is local on every node, and each node serves its name on port 8080.
    ip -n "$PREFIX$n" route add local 203.0.113.0/28 dev lo
    start "serve-$n" "$n" python3 -c "
import socketserver
class H(socketserver.BaseRequestHandler):
    def handle(self): self.request.sendall(b'$n\n')
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('0.0.0.0', 8080), H).serve_forever()"
    info "$n: ${RACK_ADDR[$i]} in ${RACK_OF[$i]} (leaf ${LEAF_OF[$i]}), 198.51.100.1$i on the management network"
  done

  step "Routers: FRR on the spine (AS 64600) and leaf1 (AS 64601), BIRD on leaf2 (AS 64602); configurations in scripts/lab/bgp/"
  frr_start spine scripts/lab/bgp/spine.frr.conf
  frr_start leaf1 scripts/lab/bgp/leaf1.frr.conf
  cp scripts/lab/bgp/leaf2.bird.conf "$STATE/bird-leaf2.conf"
  start bird-leaf2 leaf2 bird -f -c "$STATE/bird-leaf2.conf" -s "$STATE/bird-leaf2.ctl"
  wait_for 30 "the spine's sessions with both leaves" spine_has_both_leaves
  info "the spine peers with both leaves"

  if [ "$APISERVER" = kube ]; then start_kube; else start_lab_apiserver; fi
  for n in "${NODES[@]}"; do
    kc label node "$n" "topology.kubernetes.io/rack=${RACK_OF[${n#node}]}" --overwrite >/dev/null
  done
  info "Nodes labelled topology.kubernetes.io/rack=rack1 (node1, node2) and rack2 (node3)"

  printf 'HERALD_BIN=%q\n' "$HERALD_BIN" >"$STATE/bins"
  step "Starting one herald agent per node"
  for n in "${NODES[@]}"; do start_agent "$n"; done
  for n in "${NODES[@]}"; do
    wait_for 60 "the agent on $n (log: $STATE/agent-$n.log)" grep -q "announcer started" "$STATE/agent-$n.log"
  done
  info "agents running (logs $STATE/agent-node{1,2,3}.log)"

  step "BgpConf, one BgpPeer per leaf (selecting its rack), a BGP Eip and a Service"
  run kc apply -f deploy/examples/lab-bgp.yaml
  wait_for 30 "the Service's IP" has_service_ip
  local ip
  ip=$(service_ip)
  info "web got $ip"
  wait_for 60 "the spine to hold $ip over both leaves" hops_are spine "$ip" "192.0.2.130 192.0.2.134"
  wait_for 60 "leaf1 to hold $ip over node1 and node2" hops_are leaf1 "$ip" "192.0.2.11 192.0.2.12"
  wait_for 60 "leaf2 to hold $ip over node3" hops_are leaf2 "$ip" "192.0.2.73"
  run kc get bgppeer
  info "spine: $ip via $(next_hops spine "$ip")   (leaf1, leaf2)"
  info "leaf1: $ip via $(next_hops leaf1 "$ip")   (node1, node2)"
  info "leaf2: $ip via $(next_hops leaf2 "$ip")   (node3)"

  step "The client's view, a line a second: a new connection to $ip:8080 every 20 ms, each node answers with its name"
  start probe client python3 -u "$REPO/scripts/lab/probe.py" "$ip"
  tail -n +1 -f "$STATE/probe.log" 2>/dev/null | sed -u 's/^/    client: /' &
  local tail_pid=$!
  sleep 3
  step "kill -9 of node3's agent: its kernel closes the session, leaf2 and then the spine drop the route"
  run kill -9 "$(cat "$STATE/agent-node3.pid")"
  wait_for 30 "the spine to hold $ip over leaf1 alone" hops_are spine "$ip" 192.0.2.130
  info "spine: $ip via $(next_hops spine "$ip")"
  sleep 3
  step "node3's agent restarted"
  start_agent node3
  wait_for 60 "the spine to hold $ip over both leaves" hops_are spine "$ip" "192.0.2.130 192.0.2.134"
  info "spine: $ip via $(next_hops spine "$ip")"
  sleep 3
  wait_for 30 "leaf2's BFD session with node3" bfd_up_at_leaf2
  info "BFD (300 ms x 3) is up between each node and its leaf ($(kc get bgppeer leaf2 -o jsonpath='{.status.bfdUp}') of 1 at leaf2)"
  step "node3's rack link down: no FIN, no RST; BFD at leaf2 notices within 900 ms, long before the hold time (9 s)"
  run ip -n "${PREFIX}node3" link set eth0 down
  wait_for 30 "the spine to hold $ip over leaf1 alone" hops_are spine "$ip" 192.0.2.130
  info "spine: $ip via $(next_hops spine "$ip")"
  sleep 3
  step "node3's rack link up again"
  run ip -n "${PREFIX}node3" link set eth0 up
  # The kernel dropped the routes through eth0 when it went down; a node's network manager would put them back.
  ip -n "${PREFIX}node3" route replace default via "${LEAF_OF[3]}"
  wait_for 60 "the spine to hold $ip over both leaves" hops_are spine "$ip" "192.0.2.130 192.0.2.134"
  info "spine: $ip via $(next_hops spine "$ip")"
  sleep 3
  kill "$(cat "$STATE/probe.pid")" 2>/dev/null || true
  sleep 0.2
  kill "$tail_pid" 2>/dev/null || true
  local lost
  lost=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^lost=/) { sub("lost=", "", $i); n += $i }} END {print n + 0}' \
    "$STATE/probe.log")
  info "attempts lost in all: ${BOLD}$lost${OFF} (a lost attempt may wait up to a second). After the kill, a few: leaf2 drops the"
  info "route as soon as the session closes, the spine a moment later; after the link cut, the attempts the spine sends"
  info "to leaf2 until BFD takes node3 out (under a second; without BFD, until the hold time runs out)"

  step "The lab is running"
  cat <<EOF
    kubectl:   sudo $0 kubectl get bgppeer,eip,svc -A
    routers:   sudo $0 exec spine vtysh -N ${PREFIX}spine -c 'show bgp ipv4 unicast'
               sudo $0 exec leaf2 birdc -s $STATE/bird-leaf2.ctl show route all
    a client:  sudo $0 exec client python3 -u scripts/lab/probe.py $ip     (Ctrl-C stops it)
    logs:      $STATE/agent-node{1,2,3}.log, $STATE/frr-{spine,leaf1}/bgpd.log, $STATE/bird-leaf2.log
    failover:  sudo kill -9 \$(cat $STATE/agent-node3.pid)   # then: sudo $0 restart node3
EOF
  stay_or_leave "$detach"
}

cmd=${1:-up}
APISERVER=lab
MODE=l2
case $cmd in
  up | --detach | -d | --apiserver | --mode)
    need_root "$@"
    [ "$cmd" = up ] && shift
    detach=0
    while [ $# -gt 0 ]; do
      case $1 in
        --detach | -d) detach=1; shift ;;
        --apiserver) [ $# -ge 2 ] || die "--apiserver needs a value: lab or kube"; APISERVER=$2; shift 2 ;;
        --apiserver=*) APISERVER=${1#*=}; shift ;;
        --mode) [ $# -ge 2 ] || die "--mode needs a value: l2 or bgp"; MODE=$2; shift 2 ;;
        --mode=*) MODE=${1#*=}; shift ;;
        *) die "up: unknown argument '$1' (--detach, --apiserver lab|kube, --mode l2|bgp)" ;;
      esac
    done
    case $APISERVER in lab | kube) ;; *) die "--apiserver '$APISERVER': lab (the default) or kube" ;; esac
    case $MODE in
      l2) up "$detach" ;;
      bgp) up_bgp "$detach" ;;
      *) die "--mode '$MODE': l2 (the default) or bgp" ;;
    esac
    ;;
  down)
    need_root "$@"
    step "Removing the lab (namespaces ${PREFIX}*, their processes, $STATE)"
    down
    info "done"
    ;;
  status)
    need_root "$@"
    [ -f "$KUBECONFIG_FILE" ] || die "no lab running (start it with: sudo $0)"
    info "API server: $(cat "$STATE/apiserver" 2>/dev/null || echo lab)"
    if [ "$(cat "$STATE/mode" 2>/dev/null)" = bgp ]; then
      run kc get bgppeer,eip,svc -A
      ip=$(service_ip)
      [ -z "$ip" ] || info "spine: $ip via $(next_hops spine "$ip"); leaf1 via $(next_hops leaf1 "$ip"); leaf2 via $(next_hops leaf2 "$ip")"
      exit 0
    fi
    show_state
    for ip in $(kc get svc web -o jsonpath='{.status.loadBalancer.ingress[*].ip}'); do
      case $ip in
        *:*) mac=$(nsx client ndisc6 -q -n -r 1 -w 500 "$ip" eth0 || true) ;;
        *) mac=$(nsx client arping -i eth0 -c 1 -w 1 "$ip" | awk '/bytes from/ {print $4; exit}' || true) ;;
      esac
      info "$ip: answered by ${mac:-nobody} ${mac:+= $(node_of_mac "$mac")}"
    done
    ;;
  restart)
    need_root "$@"
    [ -f "$STATE/bins" ] || die "no lab running (start it with: sudo $0)"
    n=${2:-}
    [[ " ${NODES[*]} " == *" $n "* ]] || die "usage: $0 restart node1|node2|node3"
    # shellcheck disable=SC1091
    . "$STATE/bins"
    [ -f "$STATE/agent-$n.pid" ] && kill -TERM "$(cat "$STATE/agent-$n.pid")" 2>/dev/null && sleep 1
    start_agent "$n"
    info "herald agent on $n restarted (pid $(cat "$STATE/agent-$n.pid"), log $STATE/agent-$n.log)"
    ;;
  kubectl)
    need_root "$@"
    shift
    kc "$@"
    ;;
  exec)
    need_root "$@"
    [ $# -ge 3 ] || die "usage: $0 exec NS CMD... (NS: api, node1, node2, node3, client, sw; spine, leaf1, leaf2 in BGP mode)"
    ns=$2
    shift 2
    nsx "$ns" "$@"
    ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (up, down, status, restart, kubectl, exec, help)" ;;
esac
