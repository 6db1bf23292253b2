# The module as the flake exports it: nixos-modules/kuutamod.nix with `package` defaulting to
# the flake's own kuutamod build for the host's system (nixpkgs has no `kuutamod`).
packages:
{ lib, pkgs, ... }:
{
  # A key lets the module system deduplicate nixosModules.default and nixosModules.kuutamod.
  key = "kuutamod-flake-module";
  _file = ./flake-module.nix;
  imports = [ ./kuutamod.nix ];
  services.kuutamod.package = lib.mkDefault packages.${pkgs.stdenv.hostPlatform.system}.kuutamod;
}
