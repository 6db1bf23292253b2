# NEAR's neard, from the prebuilt near-sandbox 2.13.4 release (x86_64-linux only).
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
stdenv.mkDerivation (finalAttrs: {
  pname = "neard-sandbox";
  version = "2.13.4";

  src = fetchurl {
    url = "https://s3-us-west-1.amazonaws.com/build.nearprotocol.com/nearcore/Linux-x86_64/${finalAttrs.version}/near-sandbox.tar.gz";
    hash = "sha256-VpCkY1FyJjzwJmg/dZZcrAndkWkSWE8ScJl0/tYgFj8=";
  };

  # The tarball holds Linux-x86_64/near-sandbox.
  sourceRoot = "Linux-x86_64";

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
    platforms = [ "x86_64-linux" ];
  };
})
