# A generated 4-validator localnet (TEST KEYS ONLY: they sit in the world-readable Nix store).
# Layout and edits: see ./localnet.sh. `chainHost` is where the chain nodes run, as kuutamod's
# neard reaches them (written into kuutamod-config.json's boot nodes).
{
  lib,
  runCommand,
  writeShellApplication,
  jq,
  coreutils,
  neard,
  chainHost ? "127.0.0.1",
}:
let
  generator = writeShellApplication {
    name = "kuutamod-localnet";
    runtimeInputs = [
      neard
      jq
      coreutils
    ];
    text = lib.removePrefix "#!/usr/bin/env bash\n" (builtins.readFile ./localnet.sh);
  };
in
runCommand "kuutamod-localnet"
  {
    passthru = {
      inherit generator chainHost;
      # Ports of the chain nodes as localnet.sh assigns them by default.
      p2pPorts = [
        24570
        24571
        24572
      ];
      rpcPorts = [
        3030
        3031
        3032
      ];
    };
    meta.description = "NEAR localnet with test keys for kuutamod's VM tests";
  }
  ''
    ${lib.getExe generator} $out ${lib.escapeShellArg chainHost}
  ''
