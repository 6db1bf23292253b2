# The workspace's whole test suite (`cargo test --workspace`): the integration tests start real
# Consul agents, real etcd members and the neard simulator (built here from the workspace member
# `neard-sim`). Both etcd variables name nixpkgs' one etcd (3.5 or newer): the etcd tests run
# once per variable, so here twice on the same version; scripts/test runs 3.4 and 3.5.
#
# `consul` is unfree in nixpkgs (BSL 1.1): the flake passes it from a nixpkgs instance that
# allows exactly that package, for this check only.
{
  lib,
  rustPlatform,
  consul,
  etcd,
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

  nativeCheckInputs = [
    consul
    etcd
  ];
  preCheck = ''
    export ETCD_BIN=${lib.getExe' etcd "etcd"} ETCD_35_BIN=${lib.getExe' etcd "etcd"}
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
