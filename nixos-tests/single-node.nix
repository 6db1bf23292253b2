# One host, the module's options end to end: a local Consul server, kuutamod guarding the only
# validator of a 1-validator localnet. Checks the unit the module generates (credentials, the
# copied neard home, the kuutamoctl wrapper) and a clean stop (neard gone, lock released).
{
  pkgs,
  kuutamodModule,
  neard,
}:
let
  inherit (pkgs) lib;
  common = import ./common.nix { inherit lib pkgs neard; };

  # node0 validates alone (neard sets skip_sync_wait for a single validator); node1 only
  # provides a second node key for the voter role. TEST KEYS ONLY.
  localnet =
    pkgs.runCommand "kuutamod-localnet-single"
      {
        nativeBuildInputs = [
          neard
          pkgs.jq
        ];
      }
      ''
        neard --home gen localnet --v 1 --n 1 --prefix node
        mkdir -p $out/keys
        jq '.network.boot_nodes = "" | .rpc.addr = "127.0.0.1:3030"' \
          gen/node0/config.json > $out/config.json
        cp gen/node0/genesis.json $out/genesis.json
        cp gen/node0/validator_key.json $out/keys/validator_key.json
        cp gen/node0/node_key.json $out/keys/validator_node_key.json
        cp gen/node1/node_key.json $out/keys/voter_node_key.json
      '';
in
pkgs.testers.runNixOSTest {
  name = "kuutamod-single-node";

  nodes.machine =
    { ... }:
    {
      imports = [
        kuutamodModule
        (common.kuutamodNode {
          localnet = localnet;
          voterKey = "voter_node_key.json";
          storeAddress = "127.0.0.1";
          extraConfig = {
            accountId = lib.mkForce "node0";
            neardConfigFile = lib.mkForce "${localnet}/config.json";
          };
        })
      ];
      # One neard, kuutamod and a Consul server (Consul's share is the system's 512 MiB and
      # another 512 MiB).
      virtualisation.memorySize = lib.mkForce (common.neardVmMemory 1 + 512);
      services.consul = {
        enable = true;
        extraConfig = {
          server = true;
          bootstrap_expect = 1;
          bind_addr = "127.0.0.1";
        };
      };
    };

  testScript = ''
    HOME = "/var/lib/kuutamod"
    VALIDATING = 'kuutamod_state{type="Validating"} 1'

    machine.wait_for_unit("consul.service")
    machine.wait_for_unit("kuutamod.service")

    with subtest("the unit is what the module promised"):
        env = machine.succeed("systemctl show kuutamod -p Environment")
        for expected in [
            "KUUTAMO_ACCOUNT_ID=node0",
            "KUUTAMO_NODE_ID=machine",
            f"KUUTAMO_NEARD_HOME={HOME}",
            "KUUTAMO_SESSION_TTL=10s",
        ]:
            assert expected in env, f"{expected} missing from {env}"
        assert "KUUTAMO_VALIDATOR_KEY" not in env, env
        creds = machine.succeed("systemctl show kuutamod -p LoadCredential")
        assert "/run/kuutamod-keys/validator_key.json" in creds, creds
        assert "/nix/store" not in creds, creds
        assert machine.succeed("systemctl show kuutamod -p KillMode").strip() == "KillMode=mixed"

    with subtest("kuutamod validates and the chain advances"):
        machine.wait_until_succeeds(
            f"curl -sf http://127.0.0.1:2233/metrics | grep -qF '{VALIDATING}'", timeout=300
        )
        start = int(machine.succeed("chain-head"))
        machine.wait_until_succeeds(f"test $(chain-head) -gt {start + 5}", timeout=120)
        assert "machine" in machine.succeed("kuutamoctl active-validator")

    with subtest("neard's home was prepared by the module and runs unprivileged"):
        assert machine.succeed(f"stat -c %a {HOME}/config.json").strip() == "600"
        machine.succeed(f"test -f {HOME}/genesis.json -a -f {HOME}/validator_key.json")
        machine.succeed("pgrep -u kuutamod -x neard")
        machine.fail("pgrep -u root -x neard")

    with subtest("stop: neard stops, the lock is released, the unit exits cleanly"):
        machine.systemctl("stop kuutamod")
        machine.fail("pgrep -x neard")
        result = machine.succeed("systemctl show kuutamod -p Result").strip()
        assert result == "Result=success", result
        # kuutamoctl exits 1 when no node holds the lock.
        machine.fail("kuutamoctl active-validator")

    with subtest("a restart keeps the copied config.json (copied only when missing or changed)"):
        machine.systemctl("start kuutamod")
        machine.wait_until_succeeds(
            f"curl -sf http://127.0.0.1:2233/metrics | grep -qF '{VALIDATING}'", timeout=300
        )
        journal = machine.succeed("journalctl -b -u kuutamod")
        copies = journal.count("kuutamod: installing /var/lib/kuutamod/config.json")
        assert copies == 1, f"config.json installed {copies} times"
  '';
}
