# Shell functions shared by scripts/test.sh and scripts/lab.sh (sourced, not run).

# install_missing TOOL=PACKAGE...: installs, with apt-get, the Debian package of every tool that is not on PATH (a
# TOOL starting with / is checked as a path that exists). Prints what it installs; fails when something is missing and there is
# no apt-get. kubectl comes from the distribution's `kubectl` package when there is one, else `kubernetes-client`.
install_missing() {
  local missing=() pair tool
  for pair in "$@"; do
    tool=${pair%%=*}
    if [[ $tool == /* ]]; then
      [ -e "$tool" ] && continue
    else
      PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 && continue
    fi
    missing+=("${pair#*=}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "missing ${missing[*]}, and no apt-get to install them" >&2; return 1; }
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [[ " ${missing[*]} " == *" kubectl "* ]] && ! apt-get install -y -qq kubectl >/dev/null 2>&1; then
    missing=("${missing[@]/kubectl/kubernetes-client}")
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
