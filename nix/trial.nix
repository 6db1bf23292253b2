# `nix run`: the local failover trial of ./trial.sh, with everything it calls on its PATH.
{
  lib,
  writeShellApplication,
  callPackage,
  coreutils,
  curl,
  jq,
  procps,
  consul,
  neard,
  kuutamod,
}:
let
  localnet = callPackage ./localnet.nix { inherit neard; };
in
writeShellApplication {
  name = "kuutamod-trial";
  runtimeInputs = [
    coreutils
    curl
    jq
    procps
    consul
    neard
    kuutamod
    localnet.generator
  ];
  # writeShellApplication writes its own shebang and `set -euo pipefail`.
  text = lib.removePrefix "#!/usr/bin/env bash\n" (builtins.readFile ./trial.sh);
  meta.description = "Local kuutamod failover trial: Consul, a NEAR localnet and two kuutamod nodes";
}
