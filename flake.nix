{
  description = "kuutamod: Consul-locked active-passive failover for NEAR validators";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      # The prebuilt neard (near-sandbox) is packaged where its tarball's hash is known
      # (nix/neard-sources.nix: x86_64-linux): the VM tests, the trial and the dev shell's neard
      # are there only.
      hasNeard = system: builtins.hasAttr system (import ./nix/neard-sources.nix);
      forAllSystems = lib.genAttrs systems;

      pkgsFor = system: nixpkgs.legacyPackages.${system};
      # Consul is unfree (BSL 1.1). The flake's own checks, trial and dev shell use a nixpkgs
      # that allows exactly that package; the NixOS module never allows anything.
      pkgsWithConsulFor =
        system:
        import nixpkgs {
          inherit system;
          config.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) [ "consul" ];
        };
    in
    {
      packages = forAllSystems (
        system:
        let
          pkgs = pkgsFor system;
          kuutamod = pkgs.callPackage ./nix/kuutamod.nix { };
        in
        {
          default = kuutamod;
          inherit kuutamod;
          # Alert rules and the Grafana dashboard (contrib/, docs/operations.md).
          monitoring = pkgs.callPackage ./nix/monitoring.nix { };
        }
        // lib.optionalAttrs (hasNeard system) { neard = pkgs.callPackage ./nix/neard.nix { }; }
      );

      nixosModules.kuutamod = import ./nixos-modules/flake-module.nix self.packages;
      nixosModules.default = self.nixosModules.kuutamod;

      checks = forAllSystems (
        system:
        let
          pkgs = pkgsWithConsulFor system;
          inherit (self.packages.${system}) kuutamod;
          testArgs = {
            inherit pkgs;
            kuutamodModule = self.nixosModules.kuutamod;
            inherit (self.packages.${system}) neard;
          };
        in
        {
          inherit kuutamod;
          integration-tests = pkgs.callPackage ./nix/integration-tests.nix { inherit kuutamod; };
        }
        // lib.optionalAttrs (hasNeard system) {
          failover = import ./nixos-tests/failover.nix testArgs;
          failover-etcd = import ./nixos-tests/failover-etcd.nix testArgs;
          single-node = import ./nixos-tests/single-node.nix testArgs;
        }
      );

      apps = forAllSystems (
        system:
        lib.optionalAttrs (hasNeard system) {
          default = {
            type = "app";
            program = lib.getExe (
              (pkgsWithConsulFor system).callPackage ./nix/trial.nix {
                inherit (self.packages.${system}) kuutamod neard;
              }
            );
            meta.description = "Local kuutamod failover trial: Consul, a NEAR localnet, two kuutamod nodes";
          };
        }
      );

      devShells = forAllSystems (
        system:
        let
          pkgs = pkgsWithConsulFor system;
        in
        {
          default = pkgs.mkShell {
            packages = [
              pkgs.cargo
              pkgs.rustc
              pkgs.clippy
              pkgs.rustfmt
              pkgs.consul
              pkgs.jq
              pkgs.curl
            ]
            ++ lib.optional (hasNeard system) self.packages.${system}.neard;
          };
        }
      );
    };
}
