#!/usr/bin/env bash
# Evaluates nixos-modules/kuutamod.nix with nixpkgs' lib.evalModules against stub NixOS options
# (scripts/eval-module.nix) and checks the generated unit. Needs only nix-instantiate (Nix 2.8
# works) and a checkout of nixpkgs' lib, e.g. github:nix-community/nixpkgs.lib:
#
#   scripts/eval-module.sh /path/to/nixpkgs.lib        # the directory holding lib/
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 <path to nixpkgs' lib: a directory with lib/default.nix, or lib/ itself>" >&2
  exit 2
fi
libdir=$1
[ -f "$libdir/lib/default.nix" ] && libdir=$libdir/lib
if [ ! -f "$libdir/default.nix" ]; then
  echo "eval-module: no default.nix in $libdir" >&2
  exit 2
fi
libdir=$(cd "$libdir" && pwd)
here=$(cd "$(dirname "$0")" && pwd)

echo "eval-module: nixpkgs lib $(nix-instantiate --eval --expr "(import $libdir).version" | tr -d '"') from $libdir"
# --strict forces every check; a failed check throws and nix-instantiate exits non-zero.
if ! out=$(nix-instantiate --eval --strict --json \
  --expr "import $here/eval-module.nix { lib = import $libdir; }" 2>&1); then
  printf '%s\n' "$out" >&2
  echo "eval-module: FAILED" >&2
  exit 1
fi
printf '%s\n' "$out" | tr -d '[]' | tr ',' '\n' | sed 's/^"/  ok: /; s/"$//'
echo "eval-module: all $(printf '%s\n' "$out" | tr ',' '\n' | grep -c .) checks passed"
