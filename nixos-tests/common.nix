# Node configurations shared by kuutamod's VM tests.
{
  lib,
  pkgs,
  neard,
}:
let
  # Prints the chain head seen by the chain node's first neard.
  chainHead = pkgs.writeShellApplication {
    name = "chain-head";
    runtimeInputs = [
      pkgs.curl
      pkgs.jq
    ];
    text = ''
      curl -sf --max-time 5 "http://127.0.0.1:''${1:-3030}/status" | jq -e .sync_info.latest_block_height
    '';
  };

  # `blocks-by ACCOUNT HEIGHT`: how many blocks above HEIGHT on the canonical chain ACCOUNT
  # produced. It walks back from the head through prev_hash, so skipped heights and epoch
  # boundaries do not matter (unlike the per-epoch counters of the `validators` RPC).
  blocksBy = pkgs.writeShellApplication {
    name = "blocks-by";
    runtimeInputs = [
      pkgs.curl
      pkgs.jq
    ];
    text = ''
      account=$1 since=$2
      rpc() {
        curl -sf --max-time 5 -H 'Content-Type: application/json' \
          -d "{\"jsonrpc\":\"2.0\",\"id\":\"t\",\"method\":\"block\",\"params\":$1}" \
          http://127.0.0.1:3030
      }
      block=$(rpc '{"finality":"optimistic"}')
      count=0
      while [ "$(jq -e .result.header.height <<<"$block")" -gt "$since" ]; do
        if [ "$(jq -r .result.author <<<"$block")" = "$account" ]; then
          count=$((count + 1))
        fi
        block=$(rpc "{\"block_id\":$(jq -e .result.header.prev_hash <<<"$block")}")
      done
      echo "$count"
    '';
  };

  # Memory (MiB) of a VM running `n` neards: 2 GiB each and 512 MiB for the system. A localnet
  # neard uses far less than its RocksDB caches allow (512 MiB State, 128 MiB FlatState, 32 MiB
  # per other column, filled only as the tiny database is read), so this is headroom against an
  # out-of-memory kill mid-test, not an estimate; qemu only takes what the guest touches.
  neardVmMemory = n: 2048 * n + 512;
in
{
  inherit chainHead blocksBy neardVmMemory;

  # A single Consul server whose HTTP API the kuutamod VMs use. Consul is unfree: the test's
  # pkgs allow exactly that package (see flake.nix), the kuutamod module never does.
  consulServer =
    { config, ... }:
    {
      services.consul = {
        enable = true;
        extraConfig = {
          server = true;
          bootstrap_expect = 1;
          bind_addr = config.networking.primaryIPAddress;
          client_addr = "0.0.0.0";
          retry_interval = "1s";
          performance.raft_multiplier = 1;
        };
      };
      networking.firewall.allowedTCPPorts = [
        8300
        8301
        8500
      ];
      networking.firewall.allowedUDPPorts = [ 8301 ];
    };

  # A single etcd member (nixpkgs' services.etcd, etcd 3.5) whose client port the kuutamod VMs
  # use (KUUTAMO_LOCK_BACKEND=etcd). Plain HTTP on the test network; production uses TLS and
  # users (docs/operations.md, 1b).
  etcdServer =
    { nodes, ... }:
    {
      services.etcd = {
        enable = true;
        listenClientUrls = [ "http://0.0.0.0:2379" ];
        advertiseClientUrls = [ "http://${nodes.etcd.networking.primaryIPAddress}:2379" ];
      };
      networking.firewall.allowedTCPPorts = [ 2379 ];
    };

  # Three of the four localnet validators (node0..node2), one neard service each.
  chainNode =
    localnet:
    { lib, ... }:
    let
      indices = [
        0
        1
        2
      ];
      service =
        i:
        let
          home = "/var/lib/neard-node${toString i}";
        in
        lib.nameValuePair "neard-node${toString i}" {
          description = "localnet validator node${toString i}";
          wantedBy = [ "multi-user.target" ];
          wants = [ "network-online.target" ];
          after = [ "network-online.target" ];
          # The home is copied once: neard keeps its database next to it.
          preStart = ''
            if [ ! -e ${home}/config.json ]; then
              install -m 0600 ${localnet}/node${toString i}/* ${home}/
            fi
          '';
          serviceConfig = {
            ExecStart = "${lib.getExe neard} --home ${home} run";
            DynamicUser = true;
            StateDirectory = "neard-node${toString i}";
            Restart = "on-failure";
            LimitNOFILE = 65535;
          };
        };
    in
    {
      # Sizing (docs/nix.md, "VM sizing"): 2 GiB per neard plus the system, one vCPU per neard
      # plus one.
      virtualisation.memorySize = neardVmMemory 3;
      virtualisation.cores = 4;
      virtualisation.diskSize = 4096;
      networking.firewall.allowedTCPPorts = localnet.p2pPorts;
      environment.systemPackages = [
        chainHead
        blocksBy
      ];
      systemd.services = lib.listToAttrs (map service indices);
    };

  # A kuutamod host guarding the localnet's 4th validator (node3).
  kuutamodNode =
    {
      localnet,
      voterKey,
      # The lock store: "consul" (the address of its server) or "etcd" (of its member). The
      # choice is a plain value, never computed from `nodes`: a module's structure must not
      # depend on its arguments.
      store ? "consul",
      storeAddress,
      extraConfig ? { },
    }:
    { lib, ... }:
    {
      # One neard (2 GiB, see neardVmMemory) and kuutamod. Two vCPUs: on one, a busy neard
      # (syncing, applying chunks, a hot swap) competes with kuutamod's session renewals and
      # timers, which decide when it steps down.
      virtualisation.memorySize = neardVmMemory 1;
      virtualisation.cores = 2;
      virtualisation.diskSize = 2048;
      environment.systemPackages = [
        pkgs.curl
        chainHead
      ];

      # The module refuses key files in the Nix store (world-readable): copy the test keys out
      # to a root-only directory before kuutamod starts, as a secrets manager would.
      systemd.services.kuutamod-test-keys = {
        requiredBy = [ "kuutamod.service" ];
        before = [ "kuutamod.service" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        script = ''
          install -d -m 0700 /run/kuutamod-keys
          install -m 0600 ${localnet}/keys/validator_key.json /run/kuutamod-keys/validator_key.json
          install -m 0600 ${localnet}/keys/validator_node_key.json /run/kuutamod-keys/validator_node_key.json
          install -m 0600 ${localnet}/keys/${voterKey} /run/kuutamod-keys/voter_node_key.json
        '';
      };

      services.kuutamod = lib.mkMerge [
        {
          enable = true;
          neardPackage = neard;
          # localnet.sh's validator account (its validator-account file); checked in the test.
          accountId = "node3";
          neardConfigFile = "${localnet}/kuutamod-config.json";
          genesisFile = "${localnet}/genesis.json";
          validatorKeyFile = "/run/kuutamod-keys/validator_key.json";
          validatorNodeKeyFile = "/run/kuutamod-keys/validator_node_key.json";
          voterNodeKeyFile = "/run/kuutamod-keys/voter_node_key.json";
          # Consul's minimum TTL, for a quick takeover after a crash; the grace obeys
          # grace <= 0.4 x TTL.
          sessionTtl = "10s";
          neardStopGrace = "3s";
          logLevel = "kuutamod=debug,info";
          openFirewall = true;
        }
        # The lock store: the test's Consul server, or its etcd member.
        (
          if store == "etcd" then
            {
              lockBackend = "etcd";
              etcd.endpoints = [ "http://${storeAddress}:2379" ];
            }
          else
            { consulUrl = "http://${storeAddress}:8500"; }
        )
        extraConfig
      ];
    };
}
