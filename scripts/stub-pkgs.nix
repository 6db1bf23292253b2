# A minimal stand-in for nixpkgs, for rendering what the flake writes (scripts/eval-test-scripts.nix,
# scripts/eval-shell-apps.nix) with Nix alone. Package builders return attribute sets with a fake
# store path and the arguments they were given; `writeShellApplication` also writes its script
# out as nixpkgs does (shebang, `set -o errexit/nounset/pipefail`, PATH of runtimeInputs, text);
# `runNixOSTest` returns the test. `lib` is whatever the caller passes (nixpkgs' lib, or a set
# with only the functions the rendered code needs): anything else the code touches fails.
{ lib }:
let
  fakeDrv =
    name: attrs:
    attrs
    // {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
    };

  pkgs = {
    inherit lib;
    callPackage =
      fn: args:
      let
        f = if builtins.isFunction fn then fn else import fn;
      in
      f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);
    # Like stdenv.mkDerivation, passthru attributes are attributes of the result.
    runCommand = name: env: script: fakeDrv name (env // (env.passthru or { }) // { inherit script; });
    writeShellApplication =
      {
        name,
        text,
        runtimeInputs ? [ ],
        ...
      }@args:
      fakeDrv name (
        args
        // {
          script =
            "#!${(fakeDrv "bash" { }).outPath}/bin/bash\n"
            + "set -o errexit\nset -o nounset\nset -o pipefail\n"
            + (
              if runtimeInputs == [ ] then
                ""
              else
                "\nexport PATH=\"${builtins.concatStringsSep ":" (map (p: "${p}/bin") runtimeInputs)}:$PATH\"\n"
            )
            + "\n${text}\n";
        }
      );
    testers.runNixOSTest = test: test;
  }
  // builtins.listToAttrs (
    map (name: {
      inherit name;
      value = fakeDrv name { };
    }) [ "coreutils" "curl" "jq" "procps" "consul" "neard" "kuutamod" ]
  );
in
pkgs
