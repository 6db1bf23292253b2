# NEAR's neard, from the prebuilt near-sandbox 2.13.4 release, for the systems listed in
# ./neard-sources.nix (x86_64-linux).
#
# near-sandbox is neard built with the `sandbox` feature (extra RPC methods for tests); its CLI
# is neard's (`--home X init`, `localnet`, `run`). It is meant for kuutamod's VM tests, the
# trial app and the dev shell, not for mainnet validators. nixpkgs' `pkgs.neard` is an unrelated
# NFC daemon and its `nearcore` is years old, hence this package.
{
  lib,
  stdenv,
  fetchurl,
  autoPatchelfHook,
}:
let
  sources = import ./neard-sources.nix;
  inherit (stdenv.hostPlatform) system;
  source =
    sources.${system}
      or (throw "neard (near-sandbox): no tarball hash for ${system}; see nix/neard-sources.nix");
in
stdenv.mkDerivation (finalAttrs: {
  pname = "neard-sandbox";
  version = "2.13.4";

  src = fetchurl {
    url = "https://s3-us-west-1.amazonaws.com/build.nearprotocol.com/nearcore/${source.platform}/${finalAttrs.version}/near-sandbox.tar.gz";
    inherit (source) hash;
  };

  sourceRoot = source.platform;

  nativeBuildInputs = [ autoPatchelfHook ];
  # libstdc++ and libgcc_s (RocksDB is C++).
  buildInputs = [ stdenv.cc.cc.lib ];

  dontConfigure = true;
  dontBuild = true;

  installPhase = ''
    runHook preInstall
    install -Dm755 near-sandbox $out/bin/neard
    runHook postInstall
  '';

  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    # Proves the binary found its libraries after patching.
    $out/bin/neard --version
    runHook postInstallCheck
  '';

  meta = {
    description = "NEAR Protocol's neard (prebuilt near-sandbox build), for tests and trials";
    homepage = "https://github.com/near/nearcore";
    sourceProvenance = [ lib.sourceTypes.binaryNativeCode ];
    mainProgram = "neard";
    platforms = builtins.attrNames sources;
  };
})
