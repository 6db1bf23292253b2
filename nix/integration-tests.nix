# The workspace's whole test suite (`cargo test --workspace`): the integration tests start real
# Consul agents and the neard simulator (built here from the workspace member `neard-sim`).
#
# `consul` is unfree in nixpkgs (BSL 1.1): the flake passes it from a nixpkgs instance that
# allows exactly that package, for this check only.
{
  lib,
  rustPlatform,
  consul,
  kuutamod,
}:
let
  helpers = import ./lib.nix;
  root = ../.;
in
rustPlatform.buildRustPackage {
  pname = "kuutamod-integration-tests";
  inherit (kuutamod) version;
  # The package's source plus contrib/: tests/contrib/ checks the shipped alert rules and
  # dashboard against a running kuutamod.
  src = builtins.path {
    name = "kuutamod-test-source";
    path = root;
    filter = helpers.cargoSourceFilter root (helpers.cargoSources root ++ [ "contrib" ]);
  };
  cargoLock.lockFile = ../Cargo.lock;

  # A debug build is enough for tests and much faster than the release profile (LTO).
  buildType = "debug";
  # Builds every binary of the workspace, neard-sim included, before the tests run.
  cargoBuildFlags = [ "--workspace" ];
  cargoTestFlags = [ "--workspace" ];

  nativeCheckInputs = [ consul ];
  preCheck = ''
    # Consul and the tests write below $HOME and $TMPDIR.
    export HOME=$TMPDIR
  '';

  # Nothing to install: the derivation exists for its check phase.
  dontCargoInstall = true;
  installPhase = ''
    runHook preInstall
    mkdir -p $out
    echo "cargo test --workspace passed" > $out/result
    runHook postInstall
  '';

  meta = {
    description = "kuutamod's integration tests with a real Consul";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
  };
}
