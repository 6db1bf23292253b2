# A stand-in for nixpkgs with the real nixpkgs lib (found as <nixpkgs-lib>) and stub packages,
# so scripts/eval-flake.nix can evaluate flake.nix's outputs without nixpkgs: each "derivation"
# is an attribute set that keeps the arguments it was built from, for the checks to inspect.
# Used as `import nixpkgs { system; config; }` and through `lib`/`legacyPackages`.
{
  system,
  config ? { },
}:
let
  lib = import <nixpkgs-lib>;

  fakeDrv =
    name: attrs:
    attrs
    // {
      type = "derivation";
      inherit name system;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
      outputs = [ "out" ];
      meta = attrs.meta or { };
    };

  # Like nixpkgs: an unfree package is refused unless config allows it.
  unfree =
    pkg:
    let
      allowed = (config.allowUnfreePredicate or (_: false)) pkg;
    in
    if allowed then pkg else throw "stub-nixpkgs: unfree package ${pkg.pname} refused";

  pkgs = {
    inherit lib config;
    callPackage = lib.callPackageWith pkgs;
    stdenv = {
      hostPlatform = { inherit system; };
      cc.cc.lib = fakeDrv "gcc-lib" { };
      mkDerivation = f: let attrs = if builtins.isFunction f then lib.fix f else f; in fakeDrv "${attrs.pname}-${attrs.version}" attrs;
    };
    rustPlatform.buildRustPackage = attrs: fakeDrv "${attrs.pname}-${attrs.version}" attrs;
    fetchurl = attrs: fakeDrv "source" attrs;
    autoPatchelfHook = fakeDrv "auto-patchelf-hook" { };
    # Like stdenv.mkDerivation, passthru attributes are attributes of the result.
    runCommand = name: env: script: fakeDrv name (env // (env.passthru or { }) // { inherit script; });
    writeShellApplication =
      attrs: fakeDrv attrs.name (attrs // { meta = (attrs.meta or { }) // { mainProgram = attrs.name; }; });
    writeShellScript = name: text: fakeDrv name { inherit text; };
    writeShellScriptBin = name: text: fakeDrv name { inherit text; };
    formats.json = _: {
      type = lib.types.attrsOf lib.types.anything;
      generate = name: value: fakeDrv name { json = builtins.toJSON value; };
    };
    mkShell = attrs: fakeDrv "nix-shell" attrs;
    testers.runNixOSTest = test: fakeDrv "vm-test-run-${test.name}" { inherit test; };
    consul = unfree (fakeDrv "consul-1.22.0" { pname = "consul"; });
    etcd = fakeDrv "etcd-3.5.21" {
      pname = "etcd";
      meta.mainProgram = "etcd";
    };
    # promtool is in the `cli` output.
    prometheus = fakeDrv "prometheus" { pname = "prometheus"; outputs = [ "out" "cli" ]; cli = fakeDrv "prometheus-cli" { }; };
  }
  // lib.genAttrs [
    "cargo"
    "rustc"
    "clippy"
    "rustfmt"
    "coreutils"
    "curl"
    "jq"
    "procps"
  ] (n: fakeDrv n { pname = n; });
in
pkgs
