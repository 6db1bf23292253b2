#!/usr/bin/env bash
# Makes a `consul` binary available and prints its path.
#
# Uses `consul` from PATH when there is one (a Nix shell, HashiCorp's packages). Otherwise it
# fetches Consul 1.8.7 (MPL-2.0, a static binary) from Debian's bullseye archive into a cache
# folder, without touching the system's apt configuration, and prints that path.
set -euo pipefail

if command -v consul >/dev/null 2>&1; then
  command -v consul
  exit 0
fi

cache=${KUUTAMO_CONSUL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-bullseye}
bin=$cache/root/usr/bin/consul
if [ ! -x "$bin" ]; then
  echo "install-consul: fetching consul from Debian bullseye into $cache" >&2
  mkdir -p "$cache/lists/partial"
  echo 'deb http://deb.debian.org/debian bullseye main' >"$cache/sources.list"
  o=(-o "Dir::Etc::SourceList=$cache/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$cache/lists" -o Debug::NoLocking=1)
  # As root, apt downloads as the unprivileged user _apt, which cannot write into a cache in
  # root's home: it falls back to root and warns ("Download is performed unsandboxed as
  # root ... Permission denied"), which reads like a failure. Ask for root from the start.
  if [ "$(id -u)" = 0 ]; then o+=(-o APT::Sandbox::User=root); fi
  apt-get "${o[@]}" -qq update >&2
  (cd "$cache" && rm -f consul_*.deb && apt-get "${o[@]}" -qq download consul >&2)
  dpkg -x "$cache"/consul_*.deb "$cache/root"
fi
"$bin" version >/dev/null || { echo "install-consul: $bin does not run" >&2; exit 1; }
echo "$bin"
