# services.kuutamod: run kuutamod, the Consul-locked failover supervisor for a NEAR validator.
#
# kuutamod starts and stops neard itself; this module prepares neard's home (config.json and
# genesis.json in the StateDirectory), hands the key files to the unit with LoadCredential (so
# they never enter the Nix store), and sets the KUUTAMO_* variables. It never enables Consul and
# never allows unfree packages: Consul is the operator's choice (see docs/nix.md).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.kuutamod;
  helpers = import ../nix/lib.nix;
  settingsFormat = pkgs.formats.json { };

  inherit (lib) mkOption types;

  # neard's home: kuutamod runs neard there and keeps its database in `data/`.
  stateDir = "/var/lib/kuutamod";

  durationType = types.strMatching helpers.durationRegex;

  # Slack on top of neard's stop grace before systemd kills everything: kuutamod still has to
  # destroy its Consul session (an HTTP call with its own short timeout) and exit.
  stopMarginSec = 15;

  neardConfigSource =
    if cfg.neardConfigFile != null then
      cfg.neardConfigFile
    else
      settingsFormat.generate "neard-config.json" cfg.neardSettings;

  # Copies config.json and genesis.json into neard's home when missing or when their source
  # changed. A stamp file per target records the source's path, size and mtime: a store path
  # changes with its content; a file outside the store (a big genesis kept in /var/lib, say)
  # changes size or mtime when edited. kuutamod then rewrites network.addr and the key files in
  # the copy, so the copy is writable (0600) and a changed source replaces it as a whole.
  prepareHome = pkgs.writeShellScript "kuutamod-prepare-home" ''
    set -eu
    PATH=${lib.makeBinPath [ pkgs.coreutils ]}
    install_if_changed() {
      src=$1 dst=$2 stamp="$2.source"
      want=$(stat --dereference --format '%n %s %Y' "$src")
      if [ ! -e "$dst" ] || [ ! -e "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "kuutamod: installing $dst from $src"
        install -m 0600 "$src" "$dst.tmp"
        mv -f "$dst.tmp" "$dst"
        printf '%s' "$want" > "$stamp"
      fi
    }
    install_if_changed ${lib.escapeShellArg "${neardConfigSource}"} ${stateDir}/config.json
    install_if_changed ${lib.escapeShellArg "${cfg.genesisFile}"} ${stateDir}/genesis.json
  '';

  etcd = cfg.lockBackend == "etcd";

  environment = {
    KUUTAMO_NODE_ID = cfg.nodeId;
    KUUTAMO_EXPORTER_ADDRESS = cfg.exporterAddress;
    KUUTAMO_NEARD_HOME = stateDir;
    # Guarded so that a missing neardPackage shows its assertion rather than an eval error.
    KUUTAMO_NEARD_BIN = if cfg.neardPackage != null then lib.getExe' cfg.neardPackage "neard" else "neard";
    KUUTAMO_VALIDATOR_NETWORK_ADDR = cfg.validatorNetworkAddress;
    KUUTAMO_VOTER_NETWORK_ADDR = cfg.voterNetworkAddress;
    KUUTAMO_SESSION_TTL = cfg.sessionTtl;
    KUUTAMO_NEARD_STOP_GRACE = cfg.neardStopGrace;
    KUUTAMO_SYNCING_GRACE = cfg.syncingGrace;
    KUUTAMO_FAILOVER_MODE = cfg.failoverMode;
    KUUTAMO_VOTER_SHARD_TRACKING = cfg.voterShardTracking;
    KUUTAMO_PRIORITY = toString cfg.priority;
    RUST_LOG = cfg.logLevel;
  }
  // lib.optionalAttrs (!etcd) {
    KUUTAMO_CONSUL_URL = cfg.consulUrl;
  }
  // lib.optionalAttrs etcd (
    {
      KUUTAMO_LOCK_BACKEND = "etcd";
      KUUTAMO_ETCD_ENDPOINTS = lib.concatStringsSep "," cfg.etcd.endpoints;
    }
    // lib.optionalAttrs (cfg.etcd.caFile != null) { KUUTAMO_ETCD_CA_FILE = cfg.etcd.caFile; }
    // lib.optionalAttrs (cfg.etcd.certFile != null) { KUUTAMO_ETCD_CERT_FILE = cfg.etcd.certFile; }
    # %d is systemd's credentials directory of this unit: the secrets come through LoadCredential.
    // lib.optionalAttrs (cfg.etcd.keyFile != null) { KUUTAMO_ETCD_KEY_FILE = "%d/etcd_client_key"; }
    // lib.optionalAttrs (cfg.etcd.user != null) {
      KUUTAMO_ETCD_USER = cfg.etcd.user;
      KUUTAMO_ETCD_PASSWORD_FILE = "%d/etcd_password";
    }
  )
  // lib.optionalAttrs (cfg.onRoleChange != null) {
    KUUTAMO_ON_ROLE_CHANGE = cfg.onRoleChange;
  }
  // lib.optionalAttrs (cfg.consulCaFile != null && !etcd) {
    KUUTAMO_CONSUL_CA_FILE = toString cfg.consulCaFile;
  }
  // lib.optionalAttrs (cfg.accountId != null) {
    KUUTAMO_ACCOUNT_ID = cfg.accountId;
  }
  // lib.optionalAttrs (cfg.consulTokenFile != null && !etcd) {
    # %d is systemd's credentials directory of this unit.
    KUUTAMO_CONSUL_TOKEN_FILE = "%d/consul_token";
  }
  // lib.optionalAttrs (cfg.bootNodes != [ ]) {
    KUUTAMO_NEARD_BOOTNODES = lib.concatStringsSep "," cfg.bootNodes;
  }
  // cfg.extraEnvironment;

  # kuutamod reads the three keys from $CREDENTIALS_DIRECTORY under these names when
  # KUUTAMO_VALIDATOR_KEY & co are unset.
  credentials =
    [
      "validator_key.json:${toString cfg.validatorKeyFile}"
    ]
    # Hot swap keeps the host's own node key, so the shared validator node key is optional there.
    ++ lib.optional (
      cfg.validatorNodeKeyFile != null
    ) "validator_node_key.json:${cfg.validatorNodeKeyFile}"
    ++ [ "voter_node_key.json:${toString cfg.voterNodeKeyFile}" ]
    ++ lib.optional (cfg.consulTokenFile != null && !etcd) "consul_token:${cfg.consulTokenFile}"
    ++ lib.optional (etcd && cfg.etcd.keyFile != null) "etcd_client_key:${cfg.etcd.keyFile}"
    ++ lib.optional (etcd && cfg.etcd.passwordFile != null) "etcd_password:${cfg.etcd.passwordFile}";

  # kuutamoctl with this node's account (when set), Consul URL and token file preset (the caller
  # may still override them).
  kuutamoctl = pkgs.writeShellScriptBin "kuutamoctl" (
    lib.concatLines (
      lib.optional (cfg.accountId != null) ''export KUUTAMO_ACCOUNT_ID="''${KUUTAMO_ACCOUNT_ID:-${cfg.accountId}}"''
      # Without an accountId, kuutamoctl reads the account from the key file (as root).
      ++ lib.optional (cfg.accountId == null) ''export KUUTAMO_VALIDATOR_KEY="''${KUUTAMO_VALIDATOR_KEY:-${toString cfg.validatorKeyFile}}"''
      ++ lib.optional (!etcd) ''export KUUTAMO_CONSUL_URL="''${KUUTAMO_CONSUL_URL:-${cfg.consulUrl}}"''
      ++ lib.optionals etcd (
        [
          ''export KUUTAMO_LOCK_BACKEND="''${KUUTAMO_LOCK_BACKEND:-etcd}"''
          ''export KUUTAMO_ETCD_ENDPOINTS="''${KUUTAMO_ETCD_ENDPOINTS:-${lib.concatStringsSep "," cfg.etcd.endpoints}}"''
        ]
        ++ lib.optional (cfg.etcd.caFile != null) ''export KUUTAMO_ETCD_CA_FILE="''${KUUTAMO_ETCD_CA_FILE:-${cfg.etcd.caFile}}"''
        ++ lib.optional (cfg.etcd.certFile != null) ''export KUUTAMO_ETCD_CERT_FILE="''${KUUTAMO_ETCD_CERT_FILE:-${cfg.etcd.certFile}}"''
        ++ lib.optional (cfg.etcd.keyFile != null) ''export KUUTAMO_ETCD_KEY_FILE="''${KUUTAMO_ETCD_KEY_FILE:-${cfg.etcd.keyFile}}"''
        ++ lib.optionals (cfg.etcd.user != null) [
          "# The service reads the password through LoadCredential; an operator (root) reads the file."
          ''export KUUTAMO_ETCD_USER="''${KUUTAMO_ETCD_USER:-${cfg.etcd.user}}"''
          ''export KUUTAMO_ETCD_PASSWORD_FILE="''${KUUTAMO_ETCD_PASSWORD_FILE:-${toString cfg.etcd.passwordFile}}"''
        ]
      )
      ++ lib.optionals (cfg.consulTokenFile != null && !etcd) [
        "# The service reads the token through LoadCredential; an operator (root) reads the file."
        ''export KUUTAMO_CONSUL_TOKEN_FILE="''${KUUTAMO_CONSUL_TOKEN_FILE:-${cfg.consulTokenFile}}"''
      ]
      ++ [ ''exec ${lib.getExe' cfg.package "kuutamoctl"} "$@"'' ]
    )
  );

  keyOptions = {
    validatorKeyFile = "the validator key (validator_key.json of the staking pool account)";
    validatorNodeKeyFile = "the node key neard uses while validating in restart mode (shared by all kuutamod nodes of the account; unused with hot swap)";
    voterNodeKeyFile = "this node's own node key, used while it is a passive voter";
  };

  secretPathOption =
    what:
    mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/kuutamod/validator_key.json";
      description = ''
        Absolute path of ${what}. A string on purpose: the file is read by systemd
        (`LoadCredential`) when the unit starts and never copied into the Nix store.
      '';
    };

  isStorePath = p: lib.hasPrefix builtins.storeDir (toString p);
in
{
  options.services.kuutamod = {
    enable = lib.mkEnableOption "kuutamod, active-passive failover for a NEAR validator";

    package = lib.mkPackageOption pkgs "kuutamod" { };

    neardPackage = mkOption {
      type = types.nullOr types.package;
      default = null;
      example = lib.literalExpression "inputs.kuutamod.packages.x86_64-linux.neard";
      description = ''
        Package providing NEAR's `bin/neard`. There is no default: nixpkgs' `pkgs.neard` is an
        unrelated NFC daemon. The kuutamod flake offers `packages.x86_64-linux.neard` (the
        prebuilt near-sandbox build, meant for tests and trials).
      '';
    };

    nodeId = mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "Name of this node in the Consul leader lock and in kuutamoctl's answers.";
    };

    accountId = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "kuutamo.poolv1.near";
      description = ''
        The validator (staking pool) account all kuutamod nodes of the set share: the Consul lock
        is `kuutamod-leader/<account>`. Optional: kuutamod reads the account from the validator
        key file; when this is set too and differs, kuutamod refuses to start. (A kuutamod from
        before that change does not read the key file and uses the account `default` when this
        is unset.)
      '';
    };

    lockBackend = mkOption {
      type = types.enum [
        "consul"
        "etcd"
      ];
      default = "consul";
      description = ''
        The store that holds the leader lock (KUUTAMO_LOCK_BACKEND): Consul (`consulUrl` and its
        options) or etcd (`etcd.*`). Every node of a validator must use the same one. This module
        enables neither.
      '';
    };

    etcd = {
      endpoints = mkOption {
        type = types.listOf types.str;
        default = [ "http://127.0.0.1:2379" ];
        example = [
          "https://127.0.0.1:2379"
          "https://10.0.0.21:2379"
          "https://10.0.0.30:2379"
        ];
        description = "etcd client URLs (KUUTAMO_ETCD_ENDPOINTS), this host's own member first.";
      };
      caFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/etc/etcd/tls/ca.pem";
        description = "PEM CA that signed the etcd members' certificates (KUUTAMO_ETCD_CA_FILE). Not secret: a path, read at start.";
      };
      certFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/etc/etcd/tls/kuutamod-a.pem";
        description = "PEM client certificate for etcd (KUUTAMO_ETCD_CERT_FILE); needs `keyFile`.";
      };
      keyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/kuutamod/etcd-client-key.pem";
        description = "PEM private key of `certFile`, delivered with `LoadCredential` (a string: never copied into the Nix store).";
      };
      user = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "kuutamod-validator-a";
        description = "etcd user (KUUTAMO_ETCD_USER) whose role may write kuutamod's keys (docs/operations.md, 1b); needs `passwordFile`.";
      };
      passwordFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/kuutamod/etcd-password";
        description = "File holding the etcd user's password, delivered with `LoadCredential` (a string: never copied into the Nix store).";
      };
    };

    consulUrl = mkOption {
      type = types.str;
      default = "http://localhost:8500";
      description = "HTTP API of a Consul agent. This module does not enable Consul itself.";
    };

    consulTokenFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/kuutamod/consul-token";
      description = ''
        File holding a Consul ACL token, delivered with `LoadCredential` (a string: never copied
        into the Nix store).
      '';
    };

    exporterAddress = mkOption {
      type = types.str;
      default = "127.0.0.1:2233";
      description = "Listen address of `/metrics`, `/health`, `/leader`, `/standby` and `/neard-pid`.";
    };

    validatorKeyFile = secretPathOption keyOptions.validatorKeyFile;
    validatorNodeKeyFile = secretPathOption keyOptions.validatorNodeKeyFile;
    voterNodeKeyFile = secretPathOption keyOptions.voterNodeKeyFile;

    neardConfigFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = ''
        neard's `config.json`. Copied (mode 0600) into neard's home when missing or when this
        file changes; kuutamod then sets `network.addr` and the keys itself. Give either this or
        `neardSettings`.
      '';
    };

    neardSettings = mkOption {
      type = types.nullOr settingsFormat.type;
      default = null;
      example = {
        network.boot_nodes = "";
        rpc.addr = "127.0.0.1:3030";
      };
      description = "neard's `config.json` as Nix attributes (rendered to JSON); or use `neardConfigFile`.";
    };

    genesisFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/near-genesis/genesis.json";
      description = ''
        The chain's `genesis.json`, copied into neard's home when missing or changed. Give a
        string (not a Nix path) for a large genesis kept outside the store; it must be readable
        by the service's dynamic user.
      '';
    };

    bootNodes = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "ed25519:7PGseFbWxvYVgZ89K1uTJKYoKetWs7BJtbyXDzfbAcqX@192.168.1.3:24567" ];
      description = "neard boot nodes (`ed25519:<peer key>@<ip>:<port>`), passed as KUUTAMO_NEARD_BOOTNODES.";
    };

    validatorNetworkAddress = mkOption {
      type = types.str;
      default = "0.0.0.0:24567";
      description = "neard's listen address while it validates (with the validator node key).";
    };

    voterNetworkAddress = mkOption {
      type = types.str;
      default = "0.0.0.0:24568";
      description = "neard's listen address while it is a passive voter (with this node's own node key).";
    };

    sessionTtl = mkOption {
      type = durationType;
      default = "30s";
      description = "TTL of kuutamod's Consul session (Consul's minimum is 10s unless its session_ttl_min is lowered).";
    };

    neardStopGrace = mkOption {
      type = durationType;
      default = "5s";
      description = ''
        How long kuutamod waits after SIGTERM before it SIGKILLs neard; at most 0.4 x
        `sessionTtl` (kuutamod's safety rule, checked by an assertion). The unit's
        TimeoutStopSec is this plus ${toString stopMarginSec}s.
      '';
    };

    syncingGrace = mkOption {
      type = durationType;
      default = "30s";
      description = "How long neard may report syncing before kuutamod considers it unhealthy.";
    };

    failoverMode = mkOption {
      type = types.enum [
        "restart"
        "hot-swap"
      ];
      default = "hot-swap";
      description = "`restart` neard with the validator key on takeover, or `hot-swap` the key into the running voter (SIGHUP).";
    };

    voterShardTracking = mkOption {
      type = types.enum [
        "none"
        "shadow-validator"
        "tracked-shadow-validator"
      ];
      default = "none";
      description = "How kuutamod sets a voter's shard tracking in config.json, so that a hot swap finds the validator's shards ready.";
    };

    consulCaFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/etc/consul.d/consul-agent-ca.pem";
      description = "PEM CA that signed Consul's HTTPS certificate, for an https `consulUrl` with a private CA (KUUTAMO_CONSUL_CA_FILE). Not secret: a path, read at start.";
    };

    priority = mkOption {
      type = types.ints.unsigned;
      default = 1;
      description = "Priority among the standbys (KUUTAMO_PRIORITY): a standby leaves a free lock to a ready standby with a higher priority for a moment; 0 means this node never takes the lock (a node kept for maintenance or observation).";
    };

    onRoleChange = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "logger -t kuutamod \"role $KUUTAMO_ROLE_OLD -> $KUUTAMO_ROLE_NEW\"";
      description = "A command (run with `sh -c`, KUUTAMO_ON_ROLE_CHANGE) on every state change, with the old and new state as arguments and in KUUTAMO_ROLE_OLD / KUUTAMO_ROLE_NEW. It runs for at most 30 s, inside the service's sandbox, and never delays kuutamod.";
    };

    logLevel = mkOption {
      type = types.str;
      default = "info";
      example = "kuutamod=debug,info";
      description = "RUST_LOG of kuutamod.";
    };

    extraEnvironment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        KUUTAMO_SESSION_TTL = "15s";
      };
      description = "Further environment variables for kuutamod; they override the ones this module sets.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP ports of `validatorNetworkAddress` and `voterNetworkAddress`.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      [
        {
          assertion = cfg.neardPackage != null;
          message = "services.kuutamod.neardPackage must be set to a NEAR neard package (nixpkgs' pkgs.neard is an unrelated NFC daemon; the kuutamod flake provides packages.x86_64-linux.neard).";
        }
        {
          assertion = (cfg.neardConfigFile != null) != (cfg.neardSettings != null);
          message = "services.kuutamod: set exactly one of neardConfigFile or neardSettings (neard's config.json).";
        }
        {
          assertion = cfg.genesisFile != null;
          message = "services.kuutamod.genesisFile must be set to the chain's genesis.json.";
        }
        {
          # kuutamod's rule (src/settings.rs, Timing::new): a leader that cannot renew stops
          # neard at ttl - grace - ttl/10, and that must leave room for two renewals (ttl/2).
          assertion = helpers.durationToMs cfg.neardStopGrace * 10 <= helpers.durationToMs cfg.sessionTtl * 4;
          message = "services.kuutamod.neardStopGrace (${cfg.neardStopGrace}) must be at most 0.4 x sessionTtl (${cfg.sessionTtl}): kuutamod must be able to kill neard before its Consul session can expire. Shorten the grace or lengthen the TTL.";
        }
        {
          assertion = cfg.accountId != "";
          message = "services.kuutamod.accountId is the empty string: set it to the validator (staking pool) account, e.g. \"mypool.poolv1.near\", or leave it unset (null) to use the validator key's account.";
        }
        {
          assertion = cfg.nodeId != "";
          message = "services.kuutamod.nodeId is empty (it defaults to networking.hostName, which is empty here): set it to a name unique among this validator's kuutamod nodes.";
        }
      ]
      ++ lib.concatLists (
        lib.mapAttrsToList (
          name: what:
          let
            value = cfg.${name};
          in
          [
            {
              assertion =
                value != null || (name == "validatorNodeKeyFile" && cfg.failoverMode == "hot-swap");
              message = "services.kuutamod.${name} must be set to the absolute path of ${what}${
                lib.optionalString (name == "validatorNodeKeyFile") " (needed with failoverMode = \"restart\")"
              }.";
            }
            {
              assertion = value == null || (lib.hasPrefix "/" value && !isStorePath value);
              message = "services.kuutamod.${name} must be an absolute path outside the Nix store (the store is world-readable); got ${toString value}.";
            }
          ]
        ) keyOptions
      )
      ++ [
        {
          assertion =
            cfg.consulTokenFile == null
            || (lib.hasPrefix "/" cfg.consulTokenFile && !isStorePath cfg.consulTokenFile);
          message = "services.kuutamod.consulTokenFile must be an absolute path outside the Nix store.";
        }
      ]
      ++ lib.optionals etcd [
        {
          assertion = cfg.etcd.endpoints != [ ];
          message = "services.kuutamod.etcd.endpoints is empty: list the etcd client URLs, this host's member first.";
        }
        {
          assertion = (cfg.etcd.user == null) == (cfg.etcd.passwordFile == null);
          message = "services.kuutamod.etcd.user and etcd.passwordFile go together: set both (etcd's authentication) or neither.";
        }
        {
          assertion = (cfg.etcd.certFile == null) == (cfg.etcd.keyFile == null);
          message = "services.kuutamod.etcd.certFile and etcd.keyFile go together: set both (a client certificate) or neither.";
        }
      ]
      ++ map
        (name: {
          assertion =
            cfg.etcd.${name} == null || (lib.hasPrefix "/" cfg.etcd.${name} && !isStorePath cfg.etcd.${name});
          message = "services.kuutamod.etcd.${name} must be an absolute path outside the Nix store (the store is world-readable).";
        })
        [
          "keyFile"
          "passwordFile"
        ];

    warnings =
      lib.optional
        (
          etcd
          && builtins.match "https?://(localhost|127\\.0\\.0\\.1|\\[::1])([:/].*)?" (builtins.head (cfg.etcd.endpoints ++ [ "" ])) != null
          && !config.services.etcd.enable
        )
        "services.kuutamod.etcd.endpoints starts with this host (${builtins.head cfg.etcd.endpoints}), but services.etcd is not enabled here. kuutamod needs an etcd member; this module does not enable one."
      ++ lib.optional
        (
          !etcd
          && builtins.match "https?://(localhost|127\\.0\\.0\\.1|\\[::1])([:/].*)?" cfg.consulUrl != null
          && !config.services.consul.enable
        )
        "services.kuutamod.consulUrl (${cfg.consulUrl}) points at this host, but services.consul is not enabled here. kuutamod needs a Consul agent; this module does not enable one (Consul is unfree in nixpkgs: allow it yourself).";

    environment.systemPackages = [ kuutamoctl ];

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall (
      lib.unique [
        (helpers.addressPort cfg.validatorNetworkAddress)
        (helpers.addressPort cfg.voterNetworkAddress)
      ]
    );

    systemd.services.kuutamod = {
      description = "kuutamod: failover supervisor for NEAR's neard";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after =
        [ "network-online.target" ]
        ++ lib.optional config.services.consul.enable "consul.service"
        ++ lib.optional config.services.etcd.enable "etcd.service";
      inherit environment;
      # Never give up restarting: a validator that stays down loses rewards.
      startLimitIntervalSec = 0;

      serviceConfig = {
        ExecStartPre = [
          prepareHome
          # Every setting, key and neard (home, binary, version) checked before the start, one
          # line each in the journal, all problems at once. Local checks only: kuutamod rides
          # out an unreachable Consul (its neard keeps syncing as a voter), so a Consul outage
          # must not keep the unit from starting.
          "${lib.getExe cfg.package} --check-local"
        ];
        ExecStart = lib.getExe cfg.package;
        WorkingDirectory = stateDir;
        LoadCredential = credentials;

        # kuutamod stops neard itself (SIGTERM, then SIGKILL after its grace) and then destroys
        # its Consul session: systemd signals only the main process first, and kills what is
        # left only after TimeoutStopSec.
        KillMode = "mixed";
        TimeoutStopSec = helpers.stopTimeoutSec cfg.neardStopGrace stopMarginSec;
        Restart = "always";
        RestartSec = "1s";

        DynamicUser = true;
        StateDirectory = "kuutamod";
        StateDirectoryMode = "0700";
        UMask = "0077";

        # RocksDB (neard's database) keeps many files open; neard warns below 65535.
        LimitNOFILE = 65535;

        # Hardening.
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        # @resources stays allowed (it is part of @system-service): RocksDB lowers the priority
        # of its background threads with setpriority(2).
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        SystemCallErrorNumber = "EPERM";
        # Relaxed: neard compiles contracts' WebAssembly to machine code at run time (near-vm),
        # which needs writable and executable memory; with `true` neard cannot run contracts.
        MemoryDenyWriteExecute = false;
      };
    };
  };
}
