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

  # Top-level entries of the repository that the Cargo workspace needs.
  cargoSources = [
    "Cargo.toml"
    "Cargo.lock"
    "src"
    "tests"
    "benches"
    "build.rs"
    ".cargo"
    "neard-sim"
  ];
}
