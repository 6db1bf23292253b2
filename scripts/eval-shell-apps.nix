# The scripts the flake builds with writeShellApplication (the trial app, the localnet
# generator, the VM tests' chain-head and blocks-by), written out as nixpkgs writes them: a
# shebang, `set -o errexit`, `set -o nounset`, `set -o pipefail`, the PATH of runtimeInputs,
# then the text. nixpkgs runs `bash -n` and shellcheck on that file when it builds the package;
# scripts/check-nix.sh does the same here. Result: { <name> = <script>; }.
#
# `lib` is nixpkgs' lib when given; otherwise only `removePrefix` (the one lib function on this
# path, used to drop the scripts' own shebang) is provided, and any other use fails evaluation.
{
  lib ? null,
}:
let
  miniLib = {
    removePrefix =
      prefix: s:
      let
        n = builtins.stringLength prefix;
      in
      if builtins.substring 0 n s == prefix then builtins.substring n (-1) s else s;
  };
  l = if lib == null then miniLib else lib;

  fakeDrv =
    name: attrs:
    attrs
    // {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
    };

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
          "#!/nix/store/00000000000000000000000000000000-bash/bin/bash\n"
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

  pkgs = {
    lib = l;
    inherit writeShellApplication;
    callPackage =
      fn: args:
      let
        f = if builtins.isFunction fn then fn else import fn;
      in
      f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);
    runCommand = name: env: script: fakeDrv name (env // (env.passthru or { }) // { inherit script; });
  }
  // builtins.listToAttrs (
    map (name: {
      inherit name;
      value = fakeDrv name { };
    }) [ "coreutils" "curl" "jq" "procps" "consul" "neard" "kuutamod" ]
  );

  trial = pkgs.callPackage ../nix/trial.nix { };
  localnet = pkgs.callPackage ../nix/localnet.nix { };
  common = import ../nixos-tests/common.nix {
    inherit pkgs;
    lib = l;
    inherit (pkgs) neard;
  };
in
builtins.listToAttrs (
  map
    (d: {
      inherit (d) name;
      value = d.script;
    })
    [
      trial
      localnet.generator
      common.chainHead
      common.blocksBy
    ]
)
