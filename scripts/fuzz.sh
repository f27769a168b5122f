#!/usr/bin/env bash
# Builds Herald's fuzz targets and runs each from its seed corpus; see docs/testing.md, "Fuzzing".
#
# Usage: scripts/fuzz.sh [--seconds N] [--runs N] [--jobs N] [--build-only] [TARGET...]
#   --seconds N   run each target for N seconds (default 60; with --runs alone, no time limit)
#   --runs N      stop each target after N executions
#   --jobs N      run N targets at a time, the build counting as one while it runs (default 1; CI uses 2, one per
#                 core: the Layer 2, BGP and BFD targets then run while the herald crate builds)
#   --build-only  build the targets and stop
#   TARGET        crate/target (l2/decode, bgp/fsm, herald/migrate, ...), a crate (l2, bgp, bfd, herald), or a
#                 target name that only one crate has (fsm, migrate, ...); default: all of them
#
# Plain `cargo build` with the flags `cargo fuzz build -s none -a` passes (coverage instrumentation for libFuzzer,
# `--cfg fuzzing`, debug assertions, release mode), on the stable toolchain and without cargo-fuzz. Three differences
# keep a cold build of all four crates short (CI builds them from scratch): one target directory for all of them (they
# share the Herald crates and most dependencies), rustc's default codegen units instead of cargo-fuzz's
# `-Ccodegen-units=1` (FUZZ_CODEGEN_UNITS=1 restores it: slower to build, a little faster to run), and no line tables
# (a panic still names its file and line; a backtrace names functions only).
#
# Everything goes under $FUZZ_DIR (default target/fuzz, which git ignores): the builds, each target's corpus
# (corpus/CRATE/TARGET, grown from the seeds in the repository, kept between runs), crash inputs
# (artifacts/CRATE/TARGET/) and the logs. Prints a table of executions, coverage and crashes; exits 1 when a target
# crashed, naming the input that did and the command that replays it. NICE (default 0) is the niceness of the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# crate name, fuzz crate directory, seed directory (relative to the repository)
crates=(
  "l2 crates/l2/fuzz crates/l2/fuzz/seeds"
  "bgp crates/bgp/fuzz crates/bgp/fuzz/seeds"
  "bfd crates/bfd/fuzz crates/bfd/fuzz/seeds"
  "herald fuzz fuzz/seeds"
)
# Every target, and the libFuzzer options it needs beyond the defaults. 4 KiB holds any Service, Eip or migration
# input worth trying (the largest seed is 3.4 KiB); a larger input only costs time: a 6 KiB YAML input takes
# `migrate` a millisecond.
targets=(
  "l2/decode" "l2/responder"
  "bgp/decode" "bgp/fsm"
  "bfd/packet" "bfd/session"
  "herald/k8s_service -max_len=4096" "herald/k8s_eip -max_len=4096" "herald/annotations -max_len=4096"
  "herald/migrate -max_len=4096"
)

seconds="" runs="" jobs=1 build_only=0 selected=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --build-only) build_only=1; shift ;;
    -h | --help) sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) selected+=("$1"); shift ;;
  esac
done
[ -z "$seconds" ] && [ -z "$runs" ] && seconds=60

# ---- which targets ----------------------------------------------------------------------------------------------
chosen=()
if [ ${#selected[@]} -eq 0 ]; then
  chosen=("${targets[@]}")
else
  for want in "${selected[@]}"; do
    found=()
    for t in "${targets[@]}"; do
      name=${t%% *}
      if [ "$want" = "$name" ] || [ "$want" = "${name%%/*}" ] || [ "$want" = "${name#*/}" ]; then found+=("$t"); fi
    done
    if [ ${#found[@]} -eq 0 ]; then
      echo "no fuzz target $want; there are: $(for t in "${targets[@]}"; do printf '%s ' "${t%% *}"; done)" >&2
      exit 2
    fi
    if [ ${#found[@]} -gt 1 ] && [[ $want != */* ]] && [ "$want" != "${found[0]%%/*}" ]; then
      echo "$want is ambiguous: $(for t in "${found[@]}"; do printf '%s ' "${t%% *}"; done)" >&2
      exit 2
    fi
    chosen+=("${found[@]}")
  done
fi

# ---- build ------------------------------------------------------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
  # shellcheck source=scripts/lib.sh
  . scripts/lib.sh
  install_missing g++=g++ # libfuzzer-sys compiles libFuzzer
fi
export FUZZ_DIR=${FUZZ_DIR:-$root/target/fuzz}
triple=$(rustc -vV | sed -n 's/^host: //p')
# As cargo-fuzz 0.13 sets them for `build -s none -a` (src/project.rs), less -Ccodegen-units=1.
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" -Cdebug-assertions"
[ -n "${FUZZ_CODEGEN_UNITS:-}" ] && flags+=" -Ccodegen-units=$FUZZ_CODEGEN_UNITS"
mkdir -p "$FUZZ_DIR/bin" "$FUZZ_DIR/logs"

# Builds the crates of the chosen targets one after the other, in the order of `crates`, and marks each one done.
build() {
  local c crate dir wanted t
  for c in "${crates[@]}"; do
    read -r crate dir _ <<<"$c"
    wanted=0
    for t in "${chosen[@]}"; do [ "${t%%/*}" = "$crate" ] && wanted=1; done
    [ $wanted = 1 ] || continue
    echo "==> building the $crate fuzz targets ($dir)"
    # Bins of different crates share names (two `decode`s): each is copied out under its crate's name, from the
    # path cargo reports for it.
    if ! RUSTFLAGS="$flags ${RUSTFLAGS:-}" cargo build --manifest-path "$dir/Cargo.toml" --target "$triple" \
      --release --bins --target-dir "$FUZZ_DIR/build" \
      --message-format json-render-diagnostics >"$FUZZ_DIR/logs/build-$crate.json"; then
      touch "$FUZZ_DIR/logs/build.failed"
      return 1
    fi
    mkdir -p "$FUZZ_DIR/bin/$crate"
    grep '"reason":"compiler-artifact"' "$FUZZ_DIR/logs/build-$crate.json" | grep '"executable":"' |
      sed 's/.*"target":{[^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2/' |
      while read -r bin path; do cp -f "$path" "$FUZZ_DIR/bin/$crate/$bin"; done
    touch "$FUZZ_DIR/logs/built-$crate"
  done
  echo "==> built in $((SECONDS - start)) s"
}

start=$SECONDS
rm -f "$FUZZ_DIR"/logs/built-* "$FUZZ_DIR/logs/build.failed"
if [ $build_only = 1 ]; then
  build
  exit
fi

# ---- run --------------------------------------------------------------------------------------------------------
# One target: writes its log, and a result line "target executions coverage crash-input-or-dash seconds".
run_one() {
  local spec=$1 name crate target seeds bin corpus artifacts log start rc
  name=${spec%% *}
  crate=${name%%/*} target=${name#*/}
  for c in "${crates[@]}"; do
    read -r n _ s <<<"$c"
    [ "$n" = "$crate" ] && seeds=$s/$target
  done
  bin=$FUZZ_DIR/bin/$crate/$target
  corpus=$FUZZ_DIR/corpus/$crate/$target
  artifacts=$FUZZ_DIR/artifacts/$crate/$target
  log=$FUZZ_DIR/logs/$crate-$target.log
  mkdir -p "$corpus" "$artifacts"
  local opts=(-print_final_stats=1 -timeout=30 "-artifact_prefix=$artifacts/")
  [ -n "$seconds" ] && opts+=("-max_total_time=$seconds")
  [ -n "$runs" ] && opts+=("-runs=$runs")
  # shellcheck disable=SC2206 # the per-target options are words
  [[ $spec == *' '* ]] && opts+=(${spec#* })
  start=$SECONDS
  rc=0
  nice -n "${NICE:-0}" "$bin" "${opts[@]}" "$corpus" "$root/$seeds" >"$log" 2>&1 || rc=$?
  local execs cov crash
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  cov=$(grep -o ' cov: [0-9]*' "$log" | tail -n1 | tr -dc 0-9)
  crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
  [ $rc != 0 ] && [ -z "$crash" ] && crash="exit-$rc"
  echo "$name ${execs:-?} ${cov:-?} ${crash:--} $((SECONDS - start))" >"$FUZZ_DIR/logs/$crate-$target.result"
  echo "    $name: ${execs:-?} executions, coverage ${cov:-?}, $((SECONDS - start)) s${crash:+, CRASH $crash}" |
    sed 's/, CRASH -$//'
}

# The build takes one of the --jobs slots while it runs, and a target starts as soon as its crate is built: with
# --jobs 2 the Layer 2, BGP and BFD targets run one at a time while the (long) build of the herald crate goes on.
# Those runs get niceness 19, so the build keeps both cores whenever it can use them.
echo "==> running ${#chosen[@]} targets, $jobs at a time${seconds:+, $seconds s each}${runs:+, at most $runs executions each}"
build &
build_pid=$!
building() { kill -0 "$build_pid" 2>/dev/null; }
for spec in "${chosen[@]}"; do
  name=${spec%% *}
  rm -f "$FUZZ_DIR/logs/${name%%/*}-${name#*/}.result"
  until [ -e "$FUZZ_DIR/logs/built-${name%%/*}" ]; do
    if [ -e "$FUZZ_DIR/logs/build.failed" ] || ! building; then
      wait "$build_pid" || true
      [ -e "$FUZZ_DIR/logs/built-${name%%/*}" ] && break
      echo "the build failed" >&2
      wait
      exit 1
    fi
    sleep 1
  done
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
  if building; then nice=19; else nice=${NICE:-0}; fi
  NICE=$nice run_one "$spec" &
done
wait
echo "==> built and ran in $((SECONDS - start)) s"

crashed=0
printf '\n%-20s %12s %9s %5s  %s\n' target executions coverage s crash
for spec in "${chosen[@]}"; do
  name=${spec%% *}
  result=$FUZZ_DIR/logs/${name%%/*}-${name#*/}.result
  if [ ! -f "$result" ]; then
    printf '%-20s %12s %9s %5s  %s\n' "$name" ? ? ? "no result (see $FUZZ_DIR/logs)"
    crashed=1
    continue
  fi
  read -r _ execs cov crash secs <"$result"
  printf '%-20s %12s %9s %5s  %s\n' "$name" "$execs" "$cov" "$secs" "$crash"
  if [ "$crash" != - ]; then
    crashed=1
    crate=${name%%/*} target=${name#*/}
    echo "--- $name crashed; from its log ($FUZZ_DIR/logs/$crate-$target.log):" >&2
    grep -m1 -B2 -A25 -E '^(thread .* panicked|==[0-9]+== ?ERROR|ERROR: libFuzzer)' \
      "$FUZZ_DIR/logs/$crate-$target.log" >&2 || tail -n 30 "$FUZZ_DIR/logs/$crate-$target.log" >&2
    echo "--- replay: $FUZZ_DIR/bin/$crate/$target $crash" >&2
  fi
done
exit $crashed
