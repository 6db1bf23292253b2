# Evaluates services.kuutamod (nixos-modules/) with nixpkgs' lib.evalModules, without nixpkgs:
# the NixOS options the module sets are declared here as stubs, and `pkgs` is a stub whose
# derivations are plain attribute sets. Each check throws with what it saw on a mismatch; the
# result is the list of checks that passed. Run through scripts/eval-module.sh.
{ lib }:
let
  inherit (lib) types mkOption;

  fakeDrv =
    name: extra:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
      outputs = [ "out" ];
      meta = { };
    }
    // extra;

  jsonType =
    let
      value =
        types.nullOr (
          types.oneOf [
            types.bool
            types.int
            types.float
            types.str
            types.path
            (types.attrsOf value)
            (types.listOf value)
          ]
        )
        // {
          description = "JSON value";
        };
    in
    value;

  jsonHash = text: builtins.substring 0 32 (builtins.hashString "sha256" text);

  stubPkgs = {
    coreutils = fakeDrv "coreutils-9.5" { };
    formats.json = _: {
      type = jsonType;
      # The fake store path carries a hash of the rendered JSON, so a check can tell which
      # settings reached the unit.
      generate =
        name: value:
        fakeDrv name { json = builtins.toJSON value; }
        // {
          outPath = "/nix/store/${jsonHash (builtins.toJSON value)}-${name}";
        };
    };
    writeShellScript = name: text: fakeDrv name { inherit text; };
    writeShellScriptBin = name: text: fakeDrv name { inherit text; };
    stdenv.hostPlatform.system = "x86_64-linux";
  };

  # What the flake would pass to nixos-modules/flake-module.nix.
  flakePackages.x86_64-linux.kuutamod = fakeDrv "kuutamod-0.1.0" {
    meta.mainProgram = "kuutamod";
  };
  neard = fakeDrv "neard-sandbox-2.13.4" { meta.mainProgram = "neard"; };

  # Stub declarations of the NixOS options services.kuutamod sets or reads.
  nixosStubs = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      networking.hostName = mkOption {
        type = types.str;
        default = "nixos";
      };
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      services.consul.enable = mkOption {
        type = types.bool;
        default = false;
      };
      services.etcd.enable = mkOption {
        type = types.bool;
        default = false;
      };
      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      systemd.services = mkOption {
        default = { };
        type = types.attrsOf (
          types.submodule {
            options = {
              description = mkOption { type = types.str; };
              wantedBy = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
              wants = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
              after = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
              environment = mkOption {
                type = types.attrsOf (
                  types.nullOr (
                    types.oneOf [
                      types.str
                      types.path
                      types.package
                    ]
                  )
                );
                default = { };
              };
              startLimitIntervalSec = mkOption { type = types.int; };
              serviceConfig = mkOption {
                type = types.attrsOf types.unspecified;
                default = { };
              };
            };
          }
        );
      };
    };
  };

  eval =
    config:
    (lib.evalModules {
      modules = [
        nixosStubs
        (import ../nixos-modules/flake-module.nix flakePackages)
        { _module.args.pkgs = stubPkgs; }
        config
      ];
    }).config;

  failedAssertions = cfg: map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);

  # Checks `actual == expected`; on a mismatch throws with both, shown as JSON.
  expectEq =
    name: actual: expected:
    if actual == expected then
      name
    else
      throw "FAIL ${name}:\n  expected ${builtins.toJSON expected}\n  actual   ${builtins.toJSON actual}";

  expect =
    name: ok: detail:
    if ok then name else throw "FAIL ${name}: ${builtins.toJSON detail}";

  hasInfix = lib.hasInfix;

  # A validator as an operator would configure it.
  sample = {
    networking.hostName = "alpha";
    services.kuutamod = {
      enable = true;
      neardPackage = neard;
      accountId = "pool.poolv1.near";
      consulUrl = "http://10.0.0.5:8500";
      consulTokenFile = "/run/secrets/consul-token";
      validatorKeyFile = "/run/secrets/validator_key.json";
      validatorNodeKeyFile = "/run/secrets/validator_node_key.json";
      voterNodeKeyFile = "/run/secrets/voter_node_key.json";
      neardSettings = {
        network.boot_nodes = "";
        rpc.addr = "127.0.0.1:3030";
      };
      genesisFile = "/var/lib/near-genesis/genesis.json";
      bootNodes = [
        "ed25519:AAA@10.0.0.1:24567"
        "ed25519:BBB@10.0.0.2:24567"
      ];
      failoverMode = "hot-swap";
      sessionTtl = "5m";
      neardStopGrace = "1m30s";
      extraEnvironment = {
        KUUTAMO_SYNCING_GRACE = "45s";
      };
      openFirewall = true;
    };
  };

  cfg = eval sample;
  settingsHash = jsonHash (builtins.toJSON sample.services.kuutamod.neardSettings);
  unit = cfg.systemd.services.kuutamod;
  sc = unit.serviceConfig;
  # The first ExecStartPre: the script that copies config.json and genesis.json into the home.
  prepare = builtins.head sc.ExecStartPre;
  env = unit.environment;
  kuutamoctl = builtins.head cfg.environment.systemPackages;

  minimal = eval {
    services.kuutamod.enable = true;
  };
  minimalFailed = failedAssertions minimal;
  minimalRestartFailed = failedAssertions (eval {
    services.kuutamod.enable = true;
    services.kuutamod.failoverMode = "restart";
  });

  withStoreKey = eval (
    lib.recursiveUpdate sample {
      services.kuutamod.validatorKeyFile = "/nix/store/00000000000000000000000000000000-validator_key.json";
    }
  );

  withBothConfigs = eval (
    lib.recursiveUpdate sample {
      services.kuutamod.neardConfigFile = "/etc/neard/config.json";
    }
  );

  configFileOnly = eval (
    lib.recursiveUpdate sample {
      services.kuutamod = {
        neardSettings = null;
        neardConfigFile = "/etc/neard/config.json";
        consulTokenFile = null;
        bootNodes = [ ];
        openFirewall = false;
        sessionTtl = "30s";
        neardStopGrace = "5s";
      };
    }
  );
  unit2 = configFileOnly.systemd.services.kuutamod;

  # The same validator on etcd, with TLS and a user.
  etcdSample = lib.recursiveUpdate sample {
    services.kuutamod = {
      lockBackend = "etcd";
      etcd = {
        endpoints = [
          "https://127.0.0.1:2379"
          "https://10.0.0.21:2379"
        ];
        caFile = "/etc/etcd/tls/ca.pem";
        certFile = "/etc/etcd/tls/kuutamod-a.pem";
        keyFile = "/run/secrets/etcd-client-key.pem";
        user = "kuutamod-validator-a";
        passwordFile = "/run/secrets/etcd-password";
      };
    };
  };
  onEtcd = eval etcdSample;
  etcdUnit = onEtcd.systemd.services.kuutamod;
  etcdCtl = builtins.head onEtcd.environment.systemPackages;
  etcdFailed = change: failedAssertions (eval (lib.recursiveUpdate etcdSample { services.kuutamod.etcd = change; }));

  disabled = eval { services.kuutamod.neardPackage = neard; };

  noAccount = eval (lib.recursiveUpdate sample { services.kuutamod.accountId = null; });

  operator = eval (
    lib.recursiveUpdate sample {
      services.kuutamod.priority = 0;
      services.kuutamod.onRoleChange = "logger role-change";
    }
  );

  badDuration = builtins.tryEval (
    builtins.deepSeq
      (eval (lib.recursiveUpdate sample { services.kuutamod.sessionTtl = "30 seconds"; }))
      .systemd.services.kuutamod.environment
      true
  );
in
[
  (expectEq "no failed assertions for the sample" (failedAssertions cfg) [ ])
  (expectEq "no warnings for the sample" cfg.warnings [ ])
  (expectEq "priority and the role-change hook reach the environment"
    {
      inherit (operator.systemd.services.kuutamod.environment)
        KUUTAMO_PRIORITY
        KUUTAMO_ON_ROLE_CHANGE
        ;
    }
    {
      KUUTAMO_PRIORITY = "0";
      KUUTAMO_ON_ROLE_CHANGE = "logger role-change";
    }
  )
  (expectEq "ExecStart is the flake's kuutamod (meta.mainProgram)" sc.ExecStart
    "/nix/store/00000000000000000000000000000000-kuutamod-0.1.0/bin/kuutamod"
  )
  (expectEq "LoadCredential: three keys and the Consul token; paths as given (not store copies)"
    sc.LoadCredential
    [
      "validator_key.json:/run/secrets/validator_key.json"
      "validator_node_key.json:/run/secrets/validator_node_key.json"
      "voter_node_key.json:/run/secrets/voter_node_key.json"
      "consul_token:/run/secrets/consul-token"
    ]
  )
  (expectEq "Environment" env {
    KUUTAMO_NODE_ID = "alpha";
    KUUTAMO_ACCOUNT_ID = "pool.poolv1.near";
    KUUTAMO_CONSUL_URL = "http://10.0.0.5:8500";
    KUUTAMO_CONSUL_TOKEN_FILE = "%d/consul_token";
    KUUTAMO_EXPORTER_ADDRESS = "127.0.0.1:2233";
    KUUTAMO_NEARD_HOME = "/var/lib/kuutamod";
    KUUTAMO_NEARD_BIN = "/nix/store/00000000000000000000000000000000-neard-sandbox-2.13.4/bin/neard";
    KUUTAMO_NEARD_BOOTNODES = "ed25519:AAA@10.0.0.1:24567,ed25519:BBB@10.0.0.2:24567";
    KUUTAMO_VALIDATOR_NETWORK_ADDR = "0.0.0.0:24567";
    KUUTAMO_VOTER_NETWORK_ADDR = "0.0.0.0:24568";
    KUUTAMO_SESSION_TTL = "5m";
    KUUTAMO_NEARD_STOP_GRACE = "1m30s";
    KUUTAMO_SYNCING_GRACE = "45s";
    KUUTAMO_FAILOVER_MODE = "hot-swap";
    KUUTAMO_VOTER_SHARD_TRACKING = "none";
    KUUTAMO_PRIORITY = "1";
    RUST_LOG = "info";
  })
  (expect "key paths are not in the environment (kuutamod reads $CREDENTIALS_DIRECTORY)"
    (!(env ? KUUTAMO_VALIDATOR_KEY || env ? KUUTAMO_VALIDATOR_NODE_KEY || env ? KUUTAMO_VOTER_NODE_KEY))
    env
  )
  (expectEq "TimeoutStopSec = stop grace 1m30s + 15s" sc.TimeoutStopSec 105)
  (expectEq "TimeoutStopSec = stop grace 5s + 15s" unit2.serviceConfig.TimeoutStopSec 20)
  (expectEq "unit basics"
    {
      inherit (sc)
        KillMode
        Restart
        DynamicUser
        StateDirectory
        WorkingDirectory
        ProtectSystem
        NoNewPrivileges
        ;
    }
    {
      KillMode = "mixed";
      Restart = "always";
      DynamicUser = true;
      StateDirectory = "kuutamod";
      WorkingDirectory = "/var/lib/kuutamod";
      ProtectSystem = "strict";
      NoNewPrivileges = true;
    }
  )
  (expect "ExecStartPre copies the rendered neardSettings and the genesis"
    (
      hasInfix "-neard-config.json /var/lib/kuutamod/config.json" prepare.text
      && hasInfix "/var/lib/near-genesis/genesis.json /var/lib/kuutamod/genesis.json" prepare.text
      && hasInfix "install -m 0600" prepare.text
    )
    prepare.text
  )
  (expectEq "ExecStartPre then runs kuutamod's local checks, on the copied home"
    (builtins.elemAt sc.ExecStartPre 1)
    "/nix/store/00000000000000000000000000000000-kuutamod-0.1.0/bin/kuutamod --check-local"
  )
  (expect "neardSettings rendered to JSON and that file copied"
    (hasInfix "/nix/store/${settingsHash}-neard-config.json" prepare.text)
    prepare.text
  )
  (expect "neardConfigFile is copied when given instead of settings"
    (hasInfix "/etc/neard/config.json /var/lib/kuutamod/config.json" (builtins.head unit2.serviceConfig.ExecStartPre).text)
    (builtins.head unit2.serviceConfig.ExecStartPre).text
  )
  (expectEq "no token credential and no boot nodes when unset"
    [
      (builtins.length unit2.serviceConfig.LoadCredential)
      (unit2.environment ? KUUTAMO_CONSUL_TOKEN_FILE)
      (unit2.environment ? KUUTAMO_NEARD_BOOTNODES)
      unit2.environment.KUUTAMO_VOTER_SHARD_TRACKING
    ]
    [
      3
      false
      false
      "none"
    ]
  )
  (expect "kuutamoctl wrapper on the system PATH presets account and Consul URL"
    (
      kuutamoctl.name == "kuutamoctl"
      && hasInfix ''KUUTAMO_ACCOUNT_ID="''${KUUTAMO_ACCOUNT_ID:-pool.poolv1.near}"'' kuutamoctl.text
      && hasInfix ''KUUTAMO_CONSUL_URL="''${KUUTAMO_CONSUL_URL:-http://10.0.0.5:8500}"'' kuutamoctl.text
      && hasInfix ''KUUTAMO_CONSUL_TOKEN_FILE="''${KUUTAMO_CONSUL_TOKEN_FILE:-/run/secrets/consul-token}"'' kuutamoctl.text
      && hasInfix "-kuutamod-0.1.0/bin/kuutamoctl \"$@\"" kuutamoctl.text
    )
    kuutamoctl.text
  )
  (expectEq "openFirewall opens both neard ports" cfg.networking.firewall.allowedTCPPorts [
    24567
    24568
  ])
  (expectEq "firewall untouched by default" configFileOnly.networking.firewall.allowedTCPPorts [ ])
  (expectEq "importing without enable changes nothing"
    [
      (disabled.systemd.services ? kuutamod)
      disabled.environment.systemPackages
      disabled.assertions
    ]
    [
      false
      [ ]
      [ ]
    ]
  )
  (expectEq "enable alone (hot swap): assertions name every missing setting" (builtins.length minimalFailed) 5)
  (expect "enable alone: messages say what to set"
    (lib.all (s: lib.any (m: hasInfix s m) minimalFailed) [
      "neardPackage must be set"
      "exactly one of neardConfigFile or neardSettings"
      "genesisFile must be set"
      "validatorKeyFile must be set"
      "voterNodeKeyFile must be set"
    ])
    minimalFailed
  )
  (expect "restart mode also needs the validator node key"
    (lib.any (hasInfix "validatorNodeKeyFile must be set") minimalRestartFailed
      && builtins.length minimalRestartFailed == 6)
    minimalRestartFailed
  )
  (expect "accountId is optional: unset means no KUUTAMO_ACCOUNT_ID in the unit or in kuutamoctl"
    (
      failedAssertions noAccount == [ ]
      && !(noAccount.systemd.services.kuutamod.environment ? KUUTAMO_ACCOUNT_ID)
      && !(hasInfix "KUUTAMO_ACCOUNT_ID" (builtins.head noAccount.environment.systemPackages).text)
    )
    noAccount.systemd.services.kuutamod.environment
  )
  (expectEq "an empty accountId or nodeId is refused"
    (map (c: map (lib.removePrefix "services.kuutamod.") (failedAssertions c)) [
      (eval (lib.recursiveUpdate sample { services.kuutamod.accountId = ""; }))
      (eval (lib.recursiveUpdate sample { networking.hostName = ""; }))
    ])
    [
      [
        "accountId is the empty string: set it to the validator (staking pool) account, e.g. \"mypool.poolv1.near\", or leave it unset (null) to use the validator key's account."
      ]
      [
        "nodeId is empty (it defaults to networking.hostName, which is empty here): set it to a name unique among this validator's kuutamod nodes."
      ]
    ]
  )
  (expect "a key file in the Nix store is refused"
    (lib.any (hasInfix "validatorKeyFile must be an absolute path outside the Nix store") (
      failedAssertions withStoreKey
    ))
    (failedAssertions withStoreKey)
  )
  (expectEq "neardConfigFile and neardSettings together are refused" (failedAssertions withBothConfigs) [
    "services.kuutamod: set exactly one of neardConfigFile or neardSettings (neard's config.json)."
  ])
  (expectEq "a duration kuutamod cannot parse is a type error" badDuration.success false)
  (expectEq "a stop grace above 0.4 x TTL is refused (kuutamod's safety rule)"
    (failedAssertions (
      eval (
        lib.recursiveUpdate sample {
          services.kuutamod = {
            sessionTtl = "10s";
            neardStopGrace = "5s";
          };
        }
      )
    ))
    [
      "services.kuutamod.neardStopGrace (5s) must be at most 0.4 x sessionTtl (10s): kuutamod must be able to kill neard before its Consul session can expire. Shorten the grace or lengthen the TTL."
    ]
  )
  (expectEq "a stop grace of exactly 0.4 x TTL is accepted"
    (failedAssertions (
      eval (
        lib.recursiveUpdate sample {
          services.kuutamod = {
            sessionTtl = "10s";
            neardStopGrace = "4s";
          };
        }
      )
    ))
    [ ]
  )
  (expect "localhost Consul without services.consul warns" (
    builtins.length (eval (lib.recursiveUpdate sample { services.kuutamod.consulUrl = "http://localhost:8500"; })).warnings == 1
  ) "no warning")
  (expectEq "etcd: the unit's lock settings and secrets as credentials and no Consul setting"
    {
      env = lib.filterAttrs (n: _: lib.hasPrefix "KUUTAMO_ETCD_" n || n == "KUUTAMO_LOCK_BACKEND" || lib.hasPrefix "KUUTAMO_CONSUL" n) etcdUnit.environment;
      creds = builtins.filter (c: lib.hasPrefix "etcd" c || lib.hasPrefix "consul" c) etcdUnit.serviceConfig.LoadCredential;
    }
    {
      env = {
        KUUTAMO_LOCK_BACKEND = "etcd";
        KUUTAMO_ETCD_ENDPOINTS = "https://127.0.0.1:2379,https://10.0.0.21:2379";
        KUUTAMO_ETCD_CA_FILE = "/etc/etcd/tls/ca.pem";
        KUUTAMO_ETCD_CERT_FILE = "/etc/etcd/tls/kuutamod-a.pem";
        KUUTAMO_ETCD_KEY_FILE = "%d/etcd_client_key";
        KUUTAMO_ETCD_USER = "kuutamod-validator-a";
        KUUTAMO_ETCD_PASSWORD_FILE = "%d/etcd_password";
      };
      creds = [
        "etcd_client_key:/run/secrets/etcd-client-key.pem"
        "etcd_password:/run/secrets/etcd-password"
      ];
    })
  (expect "etcd: kuutamoctl is preset to the same etcd and user (reading the files as root)"
    (
      hasInfix ''KUUTAMO_LOCK_BACKEND="''${KUUTAMO_LOCK_BACKEND:-etcd}"'' etcdCtl.text
      && hasInfix ''KUUTAMO_ETCD_ENDPOINTS="''${KUUTAMO_ETCD_ENDPOINTS:-https://127.0.0.1:2379,https://10.0.0.21:2379}"'' etcdCtl.text
      && hasInfix ''KUUTAMO_ETCD_PASSWORD_FILE="''${KUUTAMO_ETCD_PASSWORD_FILE:-/run/secrets/etcd-password}"'' etcdCtl.text
      && hasInfix ''KUUTAMO_ETCD_KEY_FILE="''${KUUTAMO_ETCD_KEY_FILE:-/run/secrets/etcd-client-key.pem}"'' etcdCtl.text
      && !(hasInfix "KUUTAMO_CONSUL" etcdCtl.text)
    )
    etcdCtl.text)
  (expectEq "etcd: the sample passes every assertion" (failedAssertions onEtcd) [ ])
  (expectEq "etcd: a user without a password file or a certificate without its key or a secret in the store or no endpoint is refused"
    (map etcdFailed [
      { passwordFile = null; }
      { keyFile = null; }
      { passwordFile = "/nix/store/00000000000000000000000000000000-etcd-password"; }
      { endpoints = [ ]; }
    ])
    [
      [ "services.kuutamod.etcd.user and etcd.passwordFile go together: set both (etcd's authentication) or neither." ]
      [ "services.kuutamod.etcd.certFile and etcd.keyFile go together: set both (a client certificate) or neither." ]
      [ "services.kuutamod.etcd.passwordFile must be an absolute path outside the Nix store (the store is world-readable)." ]
      [ "services.kuutamod.etcd.endpoints is empty: list the etcd client URLs, this host's member first." ]
    ])
  (expectEq "etcd: a local member without services.etcd warns and with it the unit starts after etcd"
    {
      warnings = builtins.length onEtcd.warnings;
      after = (eval (lib.recursiveUpdate etcdSample { services.etcd.enable = true; })).systemd.services.kuutamod.after;
    }
    {
      warnings = 1;
      after = [ "network-online.target" "etcd.service" ];
    })
]
