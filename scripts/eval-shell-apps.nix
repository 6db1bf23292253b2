# The scripts the flake builds with writeShellApplication (the trial app, the localnet
# generator, the VM tests' chain-head and blocks-by), written out as nixpkgs writes them (see
# ./stub-pkgs.nix). nixpkgs runs `bash -n` and shellcheck on that file when it builds the
# package; scripts/check-nix.sh does the same here. Result: { <name> = <script>; }.
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
  pkgs = import ./stub-pkgs.nix { lib = l; };

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
