#!/usr/bin/env bash
# Evaluates nixos-modules/kuutamod.nix with nixpkgs' lib.evalModules against stub NixOS options
# (scripts/eval-module.nix) and checks the generated unit; then evaluates flake.nix's outputs
# with stub packages (scripts/eval-flake.nix, scripts/stub-nixpkgs.nix). Needs only nix-instantiate (Nix 2.8
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
# run FILE: --strict forces every check of FILE (a list of check names); a failed check
# throws, and nix-instantiate exits non-zero.
run() {
  local out
  echo "eval-module: $1"
  if ! out=$(nix-instantiate -I "nixpkgs-lib=$libdir" --eval --strict --json \
    --expr "import $here/$1 { lib = import $libdir; }" 2>&1); then
    printf '%s\n' "$out" >&2
    echo "eval-module: $1 FAILED" >&2
    exit 1
  fi
  printf '%s\n' "$out" | tr -d '[]' | tr ',' '\n' | sed 's/^"/  ok: /; s/"$//'
  echo "eval-module: $1: all $(printf '%s\n' "$out" | tr ',' '\n' | grep -c .) checks passed"
}

# The module alone, against stub NixOS options.
run eval-module.nix
# flake.nix's outputs against stub packages, and the VM test nodes through the module.
run eval-flake.nix
