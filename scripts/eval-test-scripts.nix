# Renders the testScript of every VM test in nixos-tests/ as nixpkgs' test framework would hand
# it to its checkers, with the machine names the framework declares, for
# scripts/check-vm-test-scripts. Result: { <test file> = { name; script; machines; }; }.
#
# The tests are evaluated against a stand-in for nixpkgs (./stub-pkgs.nix): `runNixOSTest`
# returns its argument, package builders return fake store paths (a testScript only
# interpolates their outPath). A function testScript gets `{ nodes }` whose
# networking.primaryIPAddress follows the framework's numbering (alphabetical, 192.168.1.N). `lib` is nixpkgs' lib when given, otherwise an empty
# set: rendering a testScript must not need it, and if it ever does, evaluation fails (it is
# never silently replaced).
{
  lib ? null,
}:
let
  pkgs = import ./stub-pkgs.nix { lib = if lib == null then { } else lib; };

  testArgs = {
    inherit pkgs;
    inherit (pkgs) neard;
    kuutamodModule = { };
  };

  # nixos/lib/testing/driver.nix: a VM's Python name replaces every character outside
  # [A-Za-z0-9_] (and a leading one outside [A-Za-z_]) with "_"; a test with exactly one node not
  # called "machine" also gets `machine`.
  pythonize =
    name:
    let
      chars = builtins.genList (i: builtins.substring i 1 name) (builtins.stringLength name);
      fix = i: c: if builtins.match (if i == 0 then "[A-Za-z_]" else "[A-Za-z0-9_]") c == null then "_" else c;
    in
    builtins.concatStringsSep "" (builtins.genList (i: fix i (builtins.elemAt chars i)) (builtins.length chars));

  render =
    file:
    let
      test = import file testArgs;
      names = builtins.attrNames test.nodes;
      nodes = builtins.listToAttrs (
        builtins.genList (i: {
          name = builtins.elemAt names i;
          value.networking.primaryIPAddress = "192.168.1.${toString (i + 1)}";
        }) (builtins.length names)
      );
      script =
        if builtins.isFunction test.testScript then
          test.testScript (builtins.intersectAttrs (builtins.functionArgs test.testScript) { inherit nodes; })
        else
          test.testScript;
      onlyMachine = builtins.length names == 1 && !(builtins.elem "machine" names);
    in
    {
      inherit (test) name;
      inherit script;
      machines = map pythonize names ++ (if onlyMachine then [ "machine" ] else [ ]);
    };

  testFiles = builtins.filter (f: f != "common.nix" && builtins.match ".*\\.nix" f != null) (
    builtins.attrNames (builtins.readDir ../nixos-tests)
  );
in
builtins.listToAttrs (
  map (f: {
    name = f;
    value = render (../nixos-tests + "/${f}");
  }) testFiles
)
