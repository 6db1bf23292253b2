# Small pure helpers shared by the NixOS module and the flake.
#
# Only builtins are used (no nixpkgs), so scripts/check-nix.sh can evaluate and test them with
# a bare `nix-instantiate`, without nixpkgs.
let
  # Units kuutamod's duration parser (src/duration.rs) accepts, in milliseconds.
  unitMs = {
    ns = 0.000001;
    us = 0.001;
    ms = 1;
    s = 1000;
    m = 60000;
    min = 60000;
    h = 3600000;
  };

  # "1.5" -> 1.5 (a float or an int, as JSON reads it).
  readNumber = text: builtins.fromJSON (if builtins.substring 0 1 text == "." then "0${text}" else text);

  # Sum of `<number><unit>` pieces, e.g. "1m30s"; throws on anything else.
  parseCompound =
    orig: rest:
    if rest == "" then
      0
    else
      let
        m = builtins.match "([0-9]+(\\.[0-9]+)?)([a-z]+)(.*)" rest;
      in
      if m == null || !(unitMs ? ${builtins.elemAt m 2}) then
        throw "kuutamod: ${builtins.toJSON orig} is not a duration; write e.g. 30s, 500ms or 1m30s"
      else
        readNumber (builtins.elemAt m 0) * unitMs.${builtins.elemAt m 2}
        + parseCompound orig (builtins.elemAt m 3);
in
rec {
  # Regular expression (POSIX ERE, for lib.types.strMatching) of the durations kuutamod
  # accepts: a bare number of seconds or unit pieces such as 30s, 500ms, 1m30s.
  durationRegex = "[0-9]+(\\.[0-9]+)?|([0-9]+(\\.[0-9]+)?(ns|us|ms|s|min|m|h))+";

  # Milliseconds in a duration string, as an integer (rounded up).
  durationToMs =
    text:
    let
      bare = builtins.match "[0-9]+(\\.[0-9]+)?" text;
      ms = if bare != null then readNumber text * 1000 else parseCompound text text;
    in
    builtins.ceil ms;

  # systemd's TimeoutStopSec for kuutamod: its neard stop grace (SIGTERM, then SIGKILL after
  # the grace) plus `marginSec` for destroying the Consul session and exiting, in whole seconds.
  stopTimeoutSec = grace: marginSec: builtins.ceil (durationToMs grace / 1000.0) + marginSec;

  # The TCP port of a listen address: "0.0.0.0:24567" and "[::]:24567" -> 24567.
  addressPort =
    address:
    let
      m = builtins.match ".*:([0-9]+)" address;
    in
    if m == null then
      throw "kuutamod: ${builtins.toJSON address} has no :port; write e.g. 0.0.0.0:24567"
    else
      builtins.fromJSON (builtins.head m);

  # Source filter for the Cargo workspace: keep only what cargo needs below `root`, so edits
  # to docs, Nix files or CI do not rebuild the package. `allowed` are top-level names.
  cargoSourceFilter =
    root: allowed: path: _type:
    let
      rootStr = toString root;
      pathStr = toString path;
      rel = builtins.substring (builtins.stringLength rootStr + 1) (-1) pathStr;
      top = builtins.head (builtins.split "/" rel);
    in
    pathStr == rootStr || builtins.elem top allowed;

  # Top-level entries of the repository that the Cargo workspace at `root` needs, read from
  # its Cargo.toml files, so that a new workspace member or path dependency is kept without
  # editing this file: Cargo.toml, Cargo.lock and .cargo; the root package's targets (cargo's
  # default src, tests, benches, examples, build.rs, and any explicit target path); every
  # workspace member; and every path dependency of those, followed transitively.
  # scripts/check-nix-source checks the result against `cargo metadata` and a build's view.
  cargoSources =
    root:
    let
      isStr = builtins.isString;
      # "a/./b/../c" -> "a/c"; "" is the root. A path above the root throws.
      normalize =
        p:
        let
          parts = builtins.filter (s: isStr s && s != "" && s != ".") (builtins.split "/" p);
          step =
            acc: s:
            if s != ".." then
              acc ++ [ s ]
            else if acc == [ ] then
              throw "kuutamod: Cargo path ${builtins.toJSON p} points outside the repository"
            else
              builtins.genList (builtins.elemAt acc) (builtins.length acc - 1);
        in
        builtins.concatStringsSep "/" (builtins.foldl' step [ ] parts);
      join = dir: p: normalize (if dir == "" then p else "${dir}/${p}");
      manifestOf = dir: builtins.fromTOML (builtins.readFile (root + "/${dir}/Cargo.toml"));
      rootManifest = manifestOf "";

      # Workspace members; a glob is supported as the last component only ("crates/*").
      expandMember =
        m:
        let
          dir = normalize m;
          parts = builtins.filter isStr (builtins.split "/" dir);
          last = builtins.elemAt parts (builtins.length parts - 1);
          parent = builtins.concatStringsSep "/" (builtins.genList (builtins.elemAt parts) (builtins.length parts - 1));
          hasGlob = s: builtins.match ".*[][*?].*" s != null;
          entries = builtins.readDir (root + "/${parent}");
        in
        if !(hasGlob dir) then
          [ dir ]
        else if hasGlob parent || last != "*" then
          throw "kuutamod: workspace member ${builtins.toJSON m} uses a glob nix/lib.nix does not expand (only a trailing /*)"
        else
          map (n: join parent n) (
            builtins.filter (
              n: entries.${n} == "directory" && builtins.pathExists (root + "/${parent}/${n}/Cargo.toml")
            ) (builtins.attrNames entries)
          );
      members = builtins.concatMap expandMember (rootManifest.workspace.members or [ ]);

      # Directories of the path dependencies declared in the manifest of `dir`.
      depTables =
        manifest:
        [
          (manifest.dependencies or { })
          (manifest.dev-dependencies or { })
          (manifest.build-dependencies or { })
          (manifest.workspace.dependencies or { })
        ]
        ++ builtins.concatMap (t: [
          (t.dependencies or { })
          (t.dev-dependencies or { })
          (t.build-dependencies or { })
        ]) (builtins.attrValues (manifest.target or { }));
      pathDeps =
        dir:
        builtins.concatMap (
          table:
          builtins.concatMap (
            dep: if builtins.isAttrs dep && dep ? path then [ (join dir dep.path) ] else [ ]
          ) (builtins.attrValues table)
        ) (depTables (manifestOf dir));

      packageDirs = map (x: x.key) (
        builtins.genericClosure {
          startSet = map (key: { inherit key; }) ([ "" ] ++ members);
          operator = x: map (key: { inherit key; }) (pathDeps x.key);
        }
      );
      topOf = dir: builtins.head (builtins.filter isStr (builtins.split "/" dir));

      # The root package's own files: cargo's default target locations and explicit ones.
      rootTargets =
        let
          explicit = builtins.concatMap (
            kind:
            let
              t = rootManifest.${kind} or [ ];
            in
            builtins.concatMap (x: if x ? path then [ (topOf (normalize x.path)) ] else [ ]) (
              if builtins.isList t then t else [ t ]
            )
          ) [ "lib" "bin" "test" "bench" "example" ];
          build = rootManifest.package.build or null;
        in
        [
          "src"
          "tests"
          "benches"
          "examples"
          "build.rs"
        ]
        ++ explicit
        ++ (if isStr build then [ (topOf (normalize build)) ] else [ ]);
    in
    builtins.sort builtins.lessThan (
      builtins.attrNames (
        builtins.listToAttrs (
          map
            (name: {
              inherit name;
              value = null;
            })
            (
              [
                "Cargo.toml"
                "Cargo.lock"
                ".cargo"
              ]
              ++ (if rootManifest ? package then rootTargets else [ ])
              ++ map topOf (builtins.filter (d: d != "") packageDirs)
            )
        )
      )
    );
}
