#!/usr/bin/env bash
# Herald's container image without a container engine (none runs on the project's machines).
#
#   scripts/image.sh build [--out FILE] [--tag NAME:TAG] [--binary PATH]
#       build the static `herald` binary (unless --binary gives one) and write the final stage of ./Dockerfile (its
#       ENTRYPOINT, CMD and LABELs; the binary at /usr/local/bin/herald, the CA bundle at
#       /etc/ssl/certs/ca-certificates.crt) as an OCI image archive: an OCI image layout
#       (index.json, oci-layout, blobs/) with a Docker `manifest.json` beside it, so `docker load`, `podman load`
#       and `ctr import` all accept it. Entries ordered and dated at the commit's time. Prints the archive's path
#       (default target/image/herald-VERSION.oci.tar; tag herald:VERSION).
#   scripts/image.sh unpack ARCHIVE DIR
#       DIR/rootfs (the image's root filesystem) and DIR/config.json (its OCI config), read as a runtime reads them:
#       index.json -> manifest -> config and layers, each blob checked against its digest.
#   sudo scripts/image.sh check ARCHIVE
#       load it with `podman load`, `ctr import` and `docker load` (Debian's podman, containerd and docker.io; each a
#       throwaway instance in a temporary directory) and check the tag, entry point and command they report; and
#       build the Dockerfile's final stage with `podman build` on the archive's root filesystem: a real builder must
#       read the same entry point, command and labels from it as `build` did.
#   sudo scripts/image.sh run [--cap-add CAP]... DIR [--] [ARGS...]
#       run the entry point of the unpacked image in DIR as the DaemonSet of deploy/herald.yaml runs it: root
#       filesystem DIR/rootfs read-only (chroot; /proc, /sys and a runtime's /dev mounted), uid 0, capability bounding
#       set NET_RAW only (drop ALL, add NET_RAW; each --cap-add CAP, e.g. NET_BIND_SERVICE, replaces that default by
#       the capabilities given, as the chart's `capabilities.add` does), no_new_privs (allowPrivilegeEscalation:
#       false). ARGS replace the image's CMD, as a
#       container's `args` do. $KUBECONFIG, if set, is mounted at /var/run/secrets/herald/kubeconfig. The process
#       keeps this script's PID (every step execs). Not emulated: seccomp (RuntimeDefault), cgroups: engine-run has
#       those.
#   sudo scripts/image.sh engine-run [--cap-add CAP]... STORE ARCHIVE [--] [ARGS...]
#       run the image under a real container runtime: podman (runc, the default seccomp profile, cgroups) with the
#       throwaway store STORE (the archive loaded once), as the DaemonSet runs it: the calling process's network
#       namespace (hostNetwork), uid 0, drop ALL + the added capabilities (default NET_RAW), read-only root,
#       no-new-privileges, $KUBECONFIG mounted as for `run`. SIGTERM reaches the agent (podman forwards it);
#       SIGKILL kills podman only: remove what is left with engine-clean.
#   sudo scripts/image.sh engine-clean STORE
#       remove every container of STORE, its mounts and STORE itself.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

die() { printf 'image.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*" >&2; }

version() { sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1; }

cmd_build() {
  local out="" tag="" binary=""
  while [ $# -gt 0 ]; do
    case $1 in
      --out) out=$2; shift 2 ;;
      --tag) tag=$2; shift 2 ;;
      --binary) binary=$2; shift 2 ;;
      *) die "build: unknown argument $1" ;;
    esac
  done
  local v revision epoch
  v=$(version)
  out=${out:-target/image/herald-$v.oci.tar}
  tag=${tag:-herald:$v}
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
  if [ -z "$binary" ]; then
    say "cargo build --profile dist --target x86_64-unknown-linux-gnu --bin herald (static: +crt-static)"
    # --target: RUSTFLAGS apply to the binary only, not to build scripts and proc macros.
    # The dist profile (Cargo.toml): LTO, one codegen unit, symbols stripped.
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --profile dist --locked --target x86_64-unknown-linux-gnu --bin herald >&2
    binary=target/x86_64-unknown-linux-gnu/dist/herald
  fi
  [ -x "$binary" ] || die "$binary is not an executable"
  # A static binary has no program interpreter: an image without libraries can run it.
  if LC_ALL=C readelf -l "$binary" 2>/dev/null | grep -q 'Requesting program interpreter'; then
    die "$binary is dynamically linked: the image has no libraries (build with -C target-feature=+crt-static)"
  fi
  # The CA bundle of the build host (Debian's ca-certificates), as the Dockerfile's build stage copies it: kube's
  # client loads the system's roots when a kubeconfig names no CA, and refuses to start without any.
  local cas=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
  [ -s "$cas" ] || die "$cas missing: install ca-certificates (or set CA_BUNDLE)"
  mkdir -p "$(dirname "$out")"
  python3 - "$REPO/Dockerfile" "$binary" "$out" "$tag" "$v" "$revision" "$epoch" "$cas" <<'EOF'
import gzip, hashlib, io, json, re, sys, tarfile, time

dockerfile, binary, out, tag, version, revision, epoch, cas = sys.argv[1:]
epoch = int(epoch)

# The final stage of the Dockerfile: its ARG defaults, LABELs, ENTRYPOINT and CMD.
lines, cont = [], ""
for raw in open(dockerfile):
    line = raw.rstrip("\n")
    if line.lstrip().startswith("#"):
        continue
    if line.endswith("\\"):
        cont += line[:-1] + " "
        continue
    lines.append(cont + line)
    cont = ""
last_from = max(i for i, l in enumerate(lines) if l.upper().startswith("FROM "))
stage = lines[last_from + 1:]
args = {"VERSION": version, "REVISION": revision}
labels, entrypoint, cmd = {}, None, None
def subst(s):
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), s)
for l in stage:
    word, _, rest = l.strip().partition(" ")
    word = word.upper()
    if word == "LABEL":
        for k, v in re.findall(r'([\w.\-/]+)="([^"]*)"', rest):
            labels[k] = subst(v)
    elif word == "ENTRYPOINT":
        entrypoint = json.loads(rest)
    elif word == "CMD":
        cmd = json.loads(rest)
if not entrypoint:
    sys.exit(f"{dockerfile}: no ENTRYPOINT in the final stage")
created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
labels["org.opencontainers.image.created"] = created

def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, mode
                t.addfile(info)
            else:
                info.mode, info.size = mode, len(data)
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()

# The layer: what the Dockerfile's build stage puts in /rootfs.
exe = open(binary, "rb").read()
dirs = ("dev", "etc", "etc/ssl", "etc/ssl/certs", "proc", "sys", "tmp", "usr", "usr/local", "usr/local/bin")
layer = tar_bytes([(d, None, 0o755) for d in dirs]
                  + [("etc/ssl/certs/ca-certificates.crt", open(cas, "rb").read(), 0o644),
                     ("usr/local/bin/herald", exe, 0o755)])
gz = io.BytesIO()
with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
    g.write(layer)
layer_gz = gz.getvalue()

def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

config = {
    "created": created,
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Entrypoint": entrypoint,
        "Cmd": cmd or [],
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        "Labels": labels,
    },
    "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
    "history": [{"created": created, "created_by": "scripts/image.sh build (final stage of Dockerfile)"}],
}
config_b = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config_b), "size": len(config_b)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(layer_gz), "size": len(layer_gz)}],
    "annotations": {k: v for k, v in labels.items() if k.startswith("org.opencontainers.image.")},
}
manifest_b = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
name, _, ref = tag.rpartition(":")
if not name or "/" in ref:
    sys.exit(f"--tag {tag}: give NAME:TAG")
full = name if "/" in name else "docker.io/library/" + name
index = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(manifest_b),
        "size": len(manifest_b),
        "platform": {"architecture": "amd64", "os": "linux"},
        # podman and skopeo read ref.name; containerd (ctr import, docker with the containerd store) the full name.
        "annotations": {"org.opencontainers.image.ref.name": ref, "io.containerd.image.name": f"{full}:{ref}"},
    }],
}
blob = lambda d: "blobs/sha256/" + d.split(":", 1)[1]
# Docker's classic `docker load` reads manifest.json.
docker_manifest = [{"Config": blob(digest(config_b)), "RepoTags": [tag], "Layers": [blob(digest(layer_gz))]}]
files = [
    ("blobs", None, 0o755),
    ("blobs/sha256", None, 0o755),
    (blob(digest(config_b)), config_b, 0o644),
    (blob(digest(layer_gz)), layer_gz, 0o644),
    (blob(digest(manifest_b)), manifest_b, 0o644),
    ("index.json", json.dumps(index, sort_keys=True, separators=(",", ":")).encode(), 0o644),
    ("manifest.json", json.dumps(docker_manifest, separators=(",", ":")).encode(), 0o644),
    ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}', 0o644),
]
open(out, "wb").write(tar_bytes(files))
print(f"{tag} {digest(manifest_b)} ({len(layer_gz) / 1e6:.1f} MB compressed)", file=sys.stderr)
EOF
  echo "$out"
}

cmd_unpack() {
  [ $# -eq 2 ] || die "usage: $0 unpack ARCHIVE DIR"
  local archive=$1 dir=$2
  [ -f "$archive" ] || die "$archive: no such file"
  mkdir -p "$dir/rootfs"
  python3 - "$archive" "$dir" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile

archive, dir = sys.argv[1:]
with tarfile.open(archive) as t:
    def read(name):
        return t.extractfile(name).read()
    def blob(desc):
        algo, hexd = desc["digest"].split(":", 1)
        data = read(f"blobs/{algo}/{hexd}")
        if hashlib.sha256(data).hexdigest() != hexd or len(data) != desc["size"]:
            sys.exit(f"{archive}: blob {desc['digest']} does not match its digest or size")
        return data
    if json.loads(read("oci-layout"))["imageLayoutVersion"] != "1.0.0":
        sys.exit("unknown image layout version")
    index = json.loads(read("index.json"))
    manifest = json.loads(blob(index["manifests"][0]))
    config_b = blob(manifest["config"])
    config = json.loads(config_b)
    for desc, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
        data = blob(desc)
        if desc["mediaType"].endswith("+gzip"):
            data = gzip.decompress(data)
        if "sha256:" + hashlib.sha256(data).hexdigest() != diff_id:
            sys.exit(f"layer {desc['digest']}: its content does not match diff_id {diff_id}")
        with tarfile.open(fileobj=io.BytesIO(data)) as layer:
            layer.extractall(os.path.join(dir, "rootfs"), filter="fully_trusted")
    open(os.path.join(dir, "config.json"), "wb").write(config_b)
EOF
  echo "$dir"
}

# The security context of deploy/herald.yaml's container, applied by the last process before it execs the entry
# point: chroot into the read-only root, drop every capability but the added ones from the bounding set (uid 0 then
# gets exactly those at exec), set no_new_privs.
RUN_PY='
import ctypes, json, os, sys
root, kubeconfig, added, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
libc = ctypes.CDLL(None, use_errno=True)
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
# linux/capability.h, in bit order.
NAMES = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
         "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT "
         "SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE "
         "AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ "
         "PERFMON BPF CHECKPOINT_RESTORE").split()
keep = set()
for name in added.split(","):
    name = name.strip().upper().removeprefix("CAP_")
    if name not in NAMES:
        sys.exit(f"image.sh run: unknown capability {name!r}")
    keep.add(NAMES.index(name))
last = int(open("/proc/sys/kernel/cap_last_cap").read())
os.chroot(root)
os.chdir("/")
for cap in range(last + 1):
    if cap not in keep and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
env = {k: v for k, v in os.environ.items() if k in ("RUST_LOG", "NO_COLOR", "NODE_NAME", "POD_NAMESPACE", "POD_UID")}
env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
if kubeconfig:
    env["KUBECONFIG"] = kubeconfig
os.execve(argv[0], argv, env)
'

cmd_run() {
  local caps=""
  while [ "${1:-}" = --cap-add ]; do
    [ $# -ge 2 ] || die "--cap-add needs a capability, e.g. NET_BIND_SERVICE"
    caps=${caps:+$caps,}$2
    shift 2
  done
  caps=${caps:-NET_RAW}
  [ $# -ge 1 ] || die "usage: $0 run [--cap-add CAP]... DIR [--] [ARGS...]"
  [ "$(id -u)" = 0 ] || die "run needs root (chroot, mounts): sudo $0 run ..."
  local dir=$1 rootfs entry
  shift
  [ "${1:-}" != -- ] || shift
  rootfs=$(cd "$dir/rootfs" && pwd) || die "$dir/rootfs: unpack the image first"
  mapfile -t entry < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["config"]
for a in c.get("Entrypoint") or []: print(a)
if len(sys.argv) == 2:
    for a in c.get("Cmd") or []: print(a)' "$dir/config.json" "$@")
  [ ${#entry[@]} -gt 0 ] || die "$dir/config.json has no entry point"
  local kubeconfig="" target=/var/run/secrets/herald/kubeconfig
  if [ -n "${KUBECONFIG:-}" ]; then
    [ -f "$KUBECONFIG" ] || die "KUBECONFIG=$KUBECONFIG: no such file"
    # The mount point, made in the unpacked copy (as a runtime does) while it is still writable.
    mkdir -p "$rootfs/${target%/*}"
    [ -e "$rootfs$target" ] || : >"$rootfs$target"
    kubeconfig=$target
  fi
  # A mount namespace of its own: the read-only root and its mounts are this process's only.
  # shellcheck disable=SC2016 # expanded by the inner bash
  exec unshare --mount --propagation private -- bash -c '
    set -e
    root=$1 host_kubeconfig=$2 kubeconfig=$3 caps=$4 py=$5
    shift 5
    mount --bind "$root" "$root"
    mount -t proc proc "$root/proc"
    mount -t sysfs -o ro sysfs "$root/sys"
    # /dev as a runtime makes it (runc default devices): a tmpfs with null, zero, full, random, urandom, tty.
    mount -t tmpfs -o nosuid,mode=755,size=64k tmpfs "$root/dev"
    for d in null zero full random urandom tty; do : >"$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"; done
    if [ -n "$kubeconfig" ]; then mount --bind -o ro "$host_kubeconfig" "$root$kubeconfig"; fi
    mount -o remount,bind,ro "$root"
    exec python3 -c "$py" "$root" "$kubeconfig" "$caps" "$@"
  ' run-image "$rootfs" "${KUBECONFIG:-}" "$kubeconfig" "$caps" "$RUN_PY" "${entry[@]}" "$@"
}

# Unmounts everything mounted at or below DIR, deepest first.
umount_under() {
  awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# Loads the archive into a throwaway podman store, containerd and dockerd (each in a temporary directory, stopped
# after) and checks the tag, entry point and command each reports.
cmd_check() {
  [ $# -eq 1 ] || die "usage: $0 check ARCHIVE"
  [ "$(id -u)" = 0 ] || die "check needs root (it starts containerd and dockerd)"
  local archive tmp ok=1 want="[/usr/local/bin/herald] [agent]" got tag
  archive=$(realpath "$1")
  tag=herald:$(version)
  tmp=$(mktemp -d /tmp/herald-image-check.XXXXXX)
  # On EXIT, not RETURN: a failed check ends with `die`, and its daemons must not outlive it. dockerd bind-mounts its
  # data root onto itself; what is still mounted under $tmp is unmounted before it is removed.
  # shellcheck disable=SC2064
  trap "kill \$(cat $tmp/*.pid 2>/dev/null) 2>/dev/null; sleep 1; umount_under $tmp; rm -rf $tmp" EXIT
  check() { # NAME GOT
    if [ "$2" = "$want" ]; then say "$1: loaded $tag: entrypoint and command $2"
    else printf 'image.sh: %s: expected %s, got: %s\n' "$1" "$want" "$2" >&2; ok=0; fi
  }

  got=$(podman --root "$tmp/podman" --runroot "$tmp/podman-run" --storage-driver vfs load -i "$archive" >&2 &&
    podman --root "$tmp/podman" --runroot "$tmp/podman-run" --storage-driver vfs image inspect "$tag" \
      --format '{{.Config.Entrypoint}} {{.Config.Cmd}}' 2>&1) || true
  check "podman load" "$got"

  printf 'version = 2\nroot = "%s"\nstate = "%s"\n[grpc]\n  address = "%s"\n' \
    "$tmp/containerd" "$tmp/containerd-state" "$tmp/containerd.sock" >"$tmp/containerd.toml"
  containerd --config "$tmp/containerd.toml" --log-level error >"$tmp/containerd.log" 2>&1 &
  echo $! >"$tmp/containerd.pid"
  for _ in $(seq 100); do [ -S "$tmp/containerd.sock" ] && break; sleep 0.1; done
  got=$(ctr --address "$tmp/containerd.sock" images import "$archive" >&2 &&
    ctr --address "$tmp/containerd.sock" images ls -q | grep -x "docker.io/library/$tag" | sed 's/.*/ok/') || true
  if [ "$got" = ok ]; then say "ctr import: docker.io/library/$tag"
  else printf 'image.sh: ctr import: %s not listed: %s\n' "$tag" "$got" >&2; ok=0; fi

  dockerd --data-root "$tmp/docker" --exec-root "$tmp/docker-exec" -H "unix://$tmp/docker.sock" \
    --pidfile "$tmp/dockerd.pidfile" --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
    >"$tmp/dockerd.log" 2>&1 &
  echo $! >"$tmp/dockerd.pid"
  for _ in $(seq 150); do [ -S "$tmp/docker.sock" ] && break; sleep 0.2; done
  got=$(/usr/bin/docker -H "unix://$tmp/docker.sock" load -i "$archive" >&2 &&
    /usr/bin/docker -H "unix://$tmp/docker.sock" image inspect "$tag" --format '{{.Config.Entrypoint}} {{.Config.Cmd}}' 2>&1) ||
    got="$got $(tail -n 3 "$tmp/dockerd.log")"
  check "docker load" "$got"

  # The Dockerfile read by a real builder (podman build, i.e. buildah): its final stage built on the archive's root
  # filesystem (the build stage's /rootfs; compiling again in a rust image needs a registry this machine cannot
  # reach) must give the entry point, command and labels that `build` read from it.
  cmd_unpack "$archive" "$tmp/unpacked" >/dev/null
  local stage=$tmp/unpacked/Dockerfile.final
  awk 'seen || /^FROM scratch/ {seen=1; print}' Dockerfile |
    sed 's|^COPY --from=build /rootfs/ /$|COPY rootfs/ /|' >"$stage"
  grep -qx 'COPY rootfs/ /' "$stage" || { echo "image.sh: Dockerfile: no final stage 'FROM scratch' with 'COPY --from=build /rootfs/ /'" >&2; ok=0; }
  local labels version revision
  labels=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["config"]["Labels"], sort_keys=True))' "$tmp/unpacked/config.json")
  version=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["org.opencontainers.image.version"])' "$labels")
  revision=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["org.opencontainers.image.revision"])' "$labels")
  got=$(podman --root "$tmp/podman" --runroot "$tmp/podman-run" --storage-driver vfs build --isolation chroot \
      --build-arg "VERSION=$version" --build-arg "REVISION=$revision" -t herald-dockerfile:check \
      -f "$stage" "$tmp/unpacked" >"$tmp/podman-build.log" 2>&1 &&
    podman --root "$tmp/podman" --runroot "$tmp/podman-run" --storage-driver vfs image inspect herald-dockerfile:check \
      --format '{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .Config.Labels}}' 2>&1) ||
    got="podman build failed: $(tail -n 5 "$tmp/podman-build.log")"
  local want_built
  want_built=$(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["config"]
labels = {k: v for k, v in c["Labels"].items() if k != "org.opencontainers.image.created"}
print(json.dumps(c["Entrypoint"]), json.dumps(c["Cmd"]), json.dumps(labels, sort_keys=True))' "$tmp/unpacked/config.json")
  got=$(python3 -c '
import json, sys
parts = sys.argv[1].split(" ", 2)
if len(parts) != 3: print(sys.argv[1]); sys.exit()
e, c, l = (json.loads(p) for p in parts)
l = {k: v for k, v in (l or {}).items() if not k.startswith("io.buildah.")}  # the builder signs its work
print(json.dumps(e), json.dumps(c), json.dumps(l, sort_keys=True))' "$got" 2>/dev/null || echo "$got")
  if [ "$got" = "$want_built" ]; then say "podman build of the Dockerfile's final stage: same entry point, command and labels"
  else printf 'image.sh: podman build of the Dockerfile'"'"'s final stage differs from the archive:\n  built:   %s\n  archive: %s\n' "$got" "$want_built" >&2; ok=0; fi
  [ "$ok" = 1 ] || die "$archive is not accepted everywhere"
}

# podman with the throwaway store STORE: vfs, runc with cgroupfs (crun refuses these machines' hybrid cgroups), and
# no default ulimits (podman's exceed the hard limits here, and raising them is refused).
podman_cmd() { # STORE: sets PODMAN to the command line
  local store=$1
  mkdir -p "$store"
  [ -f "$store/containers.conf" ] || printf '[containers]\ndefault_ulimits = []\n' >"$store/containers.conf"
  PODMAN=(env "CONTAINERS_CONF=$store/containers.conf" podman --root "$store/root" --runroot "$store/run"
    --storage-driver vfs --cgroup-manager cgroupfs --runtime runc)
}

podman_in() { # STORE ARGS...
  podman_cmd "$1"
  shift
  "${PODMAN[@]}" "$@"
}

cmd_engine_run() {
  local caps=()
  while [ "${1:-}" = --cap-add ]; do
    [ $# -ge 2 ] || die "--cap-add needs a capability, e.g. NET_BIND_SERVICE"
    caps+=(--cap-add "$2")
    shift 2
  done
  [ ${#caps[@]} -gt 0 ] || caps=(--cap-add NET_RAW)
  [ $# -ge 2 ] || die "usage: $0 engine-run [--cap-add CAP]... STORE ARCHIVE [--] [ARGS...]"
  [ "$(id -u)" = 0 ] || die "engine-run needs root"
  local store=$1 archive=$2 tag netns
  shift 2
  [ "${1:-}" != -- ] || shift
  tag=herald:$(version)
  mkdir -p "$store"
  # Loaded once per store, whoever comes first (the agents of a test start together).
  (
    flock 9
    podman_in "$store" image exists "$tag" || podman_in "$store" load -q -i "$archive" >/dev/null
  ) 9>"$store/.load-lock"
  local env=() kubeconfig_mount=() target=/var/run/secrets/herald/kubeconfig
  for v in RUST_LOG NO_COLOR NODE_NAME POD_NAMESPACE POD_UID; do
    if [ -n "${!v:-}" ]; then env+=(-e "$v=${!v}"); fi
  done
  if [ -n "${KUBECONFIG:-}" ]; then
    kubeconfig_mount=(-v "$KUBECONFIG:$target:ro" -e "KUBECONFIG=$target")
  fi
  # hostNetwork: the network namespace this script runs in. `ip netns exec` also gave it a mount namespace of its
  # own without the cgroup mounts runc needs, so podman runs in its caller's mount namespace, and joins the named
  # network namespace by path.
  netns=$(ip netns identify $$ 2>/dev/null || true)
  local enter=() network=(--network host)
  if [ -n "$netns" ]; then
    nsenter "--mount=/proc/$PPID/ns/mnt" -- true 2>/dev/null ||
      die "cannot enter the mount namespace of the caller of 'ip netns exec' (pid $PPID): run engine-run from a process that waits for it"
    enter=(nsenter "--mount=/proc/$PPID/ns/mnt" --)
    network=(--network "ns:/run/netns/$netns")
  fi
  podman_cmd "$store"
  exec "${enter[@]}" "${PODMAN[@]}" run --rm --pull never \
    "${network[@]}" --user 0 --cap-drop ALL "${caps[@]}" --read-only --security-opt no-new-privileges \
    "${env[@]}" "${kubeconfig_mount[@]}" "$tag" "$@"
}

cmd_engine_clean() {
  [ $# -eq 1 ] || die "usage: $0 engine-clean STORE"
  local store=$1
  [ -d "$store" ] || return 0
  podman_in "$store" rm -af >/dev/null 2>&1 || true
  umount_under "$(realpath "$store")"
  rm -rf "$store"
}

case ${1:-} in
  build) shift; cmd_build "$@" ;;
  check) shift; cmd_check "$@" ;;
  unpack) shift; cmd_unpack "$@" ;;
  run) shift; cmd_run "$@" ;;
  engine-run) shift; cmd_engine_run "$@" ;;
  engine-clean) shift; cmd_engine_clean "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
