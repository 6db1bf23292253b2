# kuutamod and kuutamoctl, built from the Cargo workspace at the repository root.
#
# The check phase runs only the unit tests (`--lib --bins`): the integration tests need a
# Consul binary and the neard simulator and run in ./integration-tests.nix instead.
{
  lib,
  rustPlatform,
}:
let
  helpers = import ./lib.nix;
  root = ../.;
  cargoToml = builtins.fromTOML (builtins.readFile (root + "/Cargo.toml"));
in
rustPlatform.buildRustPackage {
  pname = "kuutamod";
  inherit (cargoToml.package) version;

  # Only what cargo reads (the entries nix/lib.nix derives from the Cargo.toml files): docs,
  # Nix files and CI changes do not rebuild the package. Plain `builtins.path` rather than
  # nixpkgs' `lib.cleanSourceWith`, so that scripts/check-nix-source evaluates exactly this
  # expression with Nix alone (CI has no nixpkgs) and checks that cargo can load the copy.
  src = builtins.path {
    name = "kuutamod-source";
    path = root;
    filter = helpers.cargoSourceFilter root (helpers.cargoSources root);
  };

  # Every dependency comes from crates.io, so the lock file is enough (no vendor hash).
  cargoLock.lockFile = root + "/Cargo.lock";

  cargoBuildFlags = [
    "-p"
    "kuutamod"
  ];
  cargoTestFlags = [
    "-p"
    "kuutamod"
    "--lib"
    "--bins"
  ];

  passthru = {
    inherit cargoToml;
  };

  meta = {
    description = cargoToml.package.description;
    homepage = "https://github.com/kuutamolabs/kuutamod";
    license = lib.licenses.mit;
    mainProgram = "kuutamod";
    platforms = lib.platforms.linux;
  };
}
