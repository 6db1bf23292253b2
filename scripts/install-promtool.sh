#!/usr/bin/env bash
# Makes `promtool` (Prometheus' rule checker) available and prints its path.
#
# Pinned: Prometheus 2.42 as Debian bookworm ships it (package `prometheus`, which carries
# promtool). The package is downloaded into a cache folder and unpacked there, without touching
# the system's apt configuration and without installing the Prometheus server as a service.
# A `promtool` already on PATH is used only if it is the pinned version.
set -euo pipefail

want=2.42.

version_of() { "$1" --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p'; }

if command -v promtool >/dev/null 2>&1 && [[ "$(version_of promtool)" == "$want"* ]]; then
  command -v promtool
  exit 0
fi

cache=${KUUTAMO_PROMTOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/promtool-bookworm}
bin=$cache/root/usr/bin/promtool
if [ ! -x "$bin" ]; then
  echo "install-promtool: fetching prometheus (for promtool) from Debian bookworm into $cache" >&2
  mkdir -p "$cache/lists/partial"
  echo 'deb http://deb.debian.org/debian bookworm main' >"$cache/sources.list"
  o=(-o "Dir::Etc::SourceList=$cache/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$cache/lists" -o Debug::NoLocking=1)
  apt-get "${o[@]}" -qq update >&2
  (cd "$cache" && rm -f prometheus_*.deb && apt-get "${o[@]}" -qq download prometheus >&2)
  dpkg -x "$cache"/prometheus_*.deb "$cache/root"
fi
got=$(version_of "$bin")
if [[ "$got" != "$want"* ]]; then
  echo "install-promtool: $bin is version '${got:-unknown}', expected ${want}x; the rule tests are written for it" >&2
  exit 1
fi
echo "$bin"
