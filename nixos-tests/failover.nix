# Failover: two kuutamod hosts share one validator key of a 4-validator localnet. Exactly one
# validates; when it crashes, the other takes over and the validator keeps producing blocks.
#
# VMs: the lock store (`consul`, one Consul server; or, with `store = "etcd"`, `etcd`, one
# member of nixpkgs' services.etcd, the check `failover-etcd`), `chain` (neard node0..node2: 3
# of 4 equal stakes, more than the 2/3 the chain needs), `alpha` and `beta` (kuutamod for node3,
# each with its own voter key).
{
  pkgs,
  kuutamodModule,
  neard,
  store ? "consul",
}:
let
  inherit (pkgs) lib;
  common = import ./common.nix { inherit lib pkgs neard; };
  etcd = store == "etcd";
  # Alphabetical node order gives alpha .1, beta .2, chain .3, consul (or etcd) .4; the
  # addresses are read from the node configs rather than assumed.
  localnetFor = chainHost: pkgs.callPackage ../nix/localnet.nix { inherit neard chainHost; };
  kuutamodHost =
    voterKey:
    { nodes, ... }:
    {
      imports = [
        (common.kuutamodNode {
          localnet = localnetFor nodes.chain.networking.primaryIPAddress;
          inherit store voterKey;
          storeAddress = nodes.${store}.networking.primaryIPAddress;
        })
      ];
    };
  # The first subtest's wait for the lock store, one Python line each.
  storeUp =
    if etcd then
      [
        ''etcd.wait_for_unit("etcd.service")''
        ''etcd.wait_until_succeeds("curl -sf http://127.0.0.1:2379/health | grep -q true", timeout=120)''
      ]
    else
      [
        ''consul.wait_for_unit("consul.service")''
        ''consul.wait_until_succeeds("curl -sf http://127.0.0.1:8500/v1/status/leader | grep -q ':8300'", timeout=120)''
      ];
in
pkgs.testers.runNixOSTest {
  name = if etcd then "kuutamod-failover-etcd" else "kuutamod-failover";

  defaults.imports = [ kuutamodModule ];

  nodes = {
    ${store} = if etcd then common.etcdServer else common.consulServer;
    chain =
      { nodes, ... }:
      {
        imports = [ (common.chainNode (localnetFor nodes.chain.networking.primaryIPAddress)) ];
      };
    alpha = kuutamodHost "voter_a_node_key.json";
    beta = kuutamodHost "voter_b_node_key.json";
  };

  testScript =
    { nodes, ... }:
    let
      localnet = localnetFor nodes.chain.networking.primaryIPAddress;
    in
    ''
      # No imports: nixos-26.05 checks the script with ruff after a prelude, where an import
      # would not be at the top of the file (E402); `retry` and `polling_condition` come from
      # the driver. Annotations use only names the driver hands the script at run time
      # (`BaseMachine`, not `QemuMachine`): they are evaluated when a function is defined.
      kuutamods = [alpha, beta]
      VALIDATING = 'kuutamod_state{type="Validating"} 1'
      HOME = "/var/lib/kuutamod"


      def validates(m: BaseMachine) -> bool:
          """Whether m's kuutamod reports the Validating state on its metrics. A machine that is
          not up (crashed, or started again but not reconnected yet) counts as not validating:
          a command would boot it again or wait for its boot."""
          if not m.is_up():
              return False
          status, out = m.execute("curl -sf --max-time 5 http://127.0.0.1:2233/metrics")
          return status == 0 and VALIDATING in out.splitlines()


      def validating() -> list[BaseMachine]:
          return [m for m in kuutamods if validates(m)]


      def names(ms: list[BaseMachine]) -> list[str]:
          return [m.name for m in ms]


      def head() -> int:
          return int(chain.succeed("chain-head"))


      # The driver polls this (at most every 2 s, before each machine command) inside
      # `with at_most_one_validates:`; a False return fails the test.
      @polling_condition
      def at_most_one_validates() -> bool:
          "at most one kuutamod validates"
          now = validating()
          if len(now) > 1:
              log.warning(f"two validators at once: {names(now)}")
          return len(now) <= 1


      start_all()

      with subtest("${if etcd then "etcd" else "Consul"} and the chain come up"):
          ${builtins.concatStringsSep "\n    " storeUp}
          for i in range(3):
              chain.wait_for_unit(f"neard-node{i}.service")
          # 3 of 4 equal-stake validators hold more than 2/3: blocks without node3.
          chain.wait_until_succeeds("test $(chain-head) -gt 5", timeout=300)
          assert alpha.succeed("cat ${localnet}/validator-account").strip() == "node3"

      with subtest("exactly one kuutamod validates"):
          for m in kuutamods:
              m.wait_for_unit("kuutamod.service")

          def one_validates(last_try: bool) -> bool:
              now = validating()
              if last_try and len(now) != 1:
                  raise Exception(f"expected one validating kuutamod, got {names(now)}")
              return len(now) == 1

          retry(one_validates, 600)
          leaders = validating()
          assert len(leaders) == 1, f"expected one validator, got {names(leaders)}"
          leader, standby = (alpha, beta) if leaders[0] is alpha else (beta, alpha)
          leader.succeed(f"test -f {HOME}/validator_key.json")
          standby.fail(f"test -e {HOME}/validator_key.json")
          for m in kuutamods:
              out = m.succeed("kuutamoctl active-validator")
              assert leader.name in out, f"kuutamoctl on {m.name} names {out!r}, not {leader.name}"

      # polling_condition's declared result is "a decorator or a context manager"; used as a
      # decorator on a function it is the context manager. mypy needs the hint, ty accepts it.
      with at_most_one_validates:  # type: ignore[union-attr]
          with subtest("the guarded validator produces blocks"):
              since = head()
              chain.wait_until_succeeds(f"test $(blocks-by node3 {since}) -gt 0", timeout=300)

          with subtest("the standby takes over when the leader crashes"):
              leader.crash()
              since = head()

              def standby_validates(last_try: bool) -> bool:
                  if last_try and not validates(standby):
                      raise Exception(f"{standby.name} did not take over; validating: {names(validating())}")
                  return validates(standby)

              retry(standby_validates, 300)
              standby.succeed(f"test -f {HOME}/validator_key.json")
              out = standby.succeed("kuutamoctl active-validator")
              assert standby.name in out, f"kuutamoctl names {out!r}, not {standby.name}"
              # The chain goes on, with blocks from node3 produced after the crash.
              chain.wait_until_succeeds(f"test $(blocks-by node3 {since}) -gt 0", timeout=300)

          with subtest("the old leader comes back as a standby"):
              leader.start()
              leader.wait_for_unit("kuutamod.service")
              leader.wait_until_succeeds("curl -sf http://127.0.0.1:2233/metrics", timeout=120)
              since = head()
              chain.wait_until_succeeds(f"test $(chain-head) -gt {since + 20}", timeout=300)
              assert validates(standby), f"{standby.name} stopped validating"
              assert not validates(leader), f"{leader.name} validates again"
              leader.fail(f"test -e {HOME}/validator_key.json")

      with subtest("resource use, logged for sizing the VMs (docs/nix.md)"):
          for m in [chain, leader, standby]:
              m.log(m.succeed("free -m; ps -C neard,kuutamod -o rss=,args= || true"))
    '';
}
