# Evaluates flake.nix's outputs against scripts/stub-nixpkgs.nix (nixpkgs' real lib, stub
# packages) and checks how they are wired: output names, the package's build settings, the
# neard download, which outputs may use the unfree Consul, and that the VM test nodes' kuutamod
# settings pass the module's own assertions. Run through scripts/eval-module.sh.
{ lib }:
let
  stubNixpkgs = {
    outPath = ./stub-nixpkgs.nix;
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (
      system: import ./stub-nixpkgs.nix { inherit system; }
    );
  };
  flake = import ../flake.nix;
  self = flake.outputs { inherit self; nixpkgs = stubNixpkgs; } // {
    outPath = toString ../.;
  };

  expectEq =
    name: actual: expected:
    if actual == expected then
      name
    else
      throw "FAIL ${name}:\n  expected ${builtins.toJSON expected}\n  actual   ${builtins.toJSON actual}";
  expect = name: ok: detail: if ok then name else throw "FAIL ${name}: ${builtins.toJSON detail}";

  x86 = "x86_64-linux";
  pkg = self.packages.${x86}.kuutamod;
  neard = self.packages.${x86}.neard;
  checks = self.checks.${x86};
  unfreeOk = (builtins.tryEval (builtins.deepSeq self.devShells.${x86}.default.packages true)).success;
  plainConsul = builtins.tryEval (builtins.deepSeq stubNixpkgs.legacyPackages.${x86}.consul.name true);

  # The failover test's kuutamod host `alpha`, evaluated with the module and NixOS stubs.
  failover = checks.failover.test;
  fakeNodes = {
    chain.networking.primaryIPAddress = "192.168.1.3";
    consul.networking.primaryIPAddress = "192.168.1.4";
    etcd.networking.primaryIPAddress = "192.168.1.4";
  };
  nixosStubs = {
    freeformType = lib.types.attrsOf lib.types.anything;
    options = {
      assertions = lib.mkOption {
        type = lib.types.listOf lib.types.unspecified;
        default = [ ];
      };
      warnings = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
      };
      networking.hostName = lib.mkOption { type = lib.types.str; };
      networking.firewall.allowedTCPPorts = lib.mkOption {
        type = lib.types.listOf lib.types.port;
        default = [ ];
      };
      services.consul.enable = lib.mkOption {
        type = lib.types.bool;
        default = false;
      };
      services.etcd.enable = lib.mkOption {
        type = lib.types.bool;
        default = false;
      };
      # nixpkgs' services.etcd options that the failover-etcd test's etcd VM sets.
      services.etcd.listenClientUrls = lib.mkOption { type = lib.types.listOf lib.types.str; };
      services.etcd.advertiseClientUrls = lib.mkOption { type = lib.types.listOf lib.types.str; };
      environment.systemPackages = lib.mkOption {
        type = lib.types.listOf lib.types.package;
        default = [ ];
      };
      systemd.services = lib.mkOption {
        type = lib.types.attrsOf (lib.types.submodule { freeformType = lib.types.attrsOf lib.types.anything; });
        default = { };
      };
    };
  };
  evalNode =
    test: name: nodeModule:
    (lib.evalModules {
      modules = [
        nixosStubs
        (test.defaults or { })
        nodeModule
        {
          networking.hostName = name;
          _module.args = {
            pkgs = import ./stub-nixpkgs.nix { system = x86; };
            nodes = fakeNodes;
          };
        }
      ];
    }).config;
  chain = evalNode failover "chain" failover.nodes.chain;
  alpha = evalNode failover "alpha" failover.nodes.alpha;
  beta = evalNode failover "beta" failover.nodes.beta;
  # The same test on etcd (nixos-tests/failover-etcd.nix).
  failoverEtcd = checks.failover-etcd.test;
  alphaEtcd = evalNode failoverEtcd "alpha" failoverEtcd.nodes.alpha;
  betaEtcd = evalNode failoverEtcd "beta" failoverEtcd.nodes.beta;
  etcdNode = evalNode failoverEtcd "etcd" failoverEtcd.nodes.etcd;
  single = checks.single-node.test;
  singleMachine = evalNode single "machine" single.nodes.machine;
  failedAssertions = cfg: map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);
in
[
  (expectEq "outputs" (builtins.attrNames (flake.outputs { inherit self; nixpkgs = stubNixpkgs; })) [
    "apps"
    "checks"
    "devShells"
    "nixosModules"
    "packages"
  ])
  (expectEq "packages per system" (lib.mapAttrs (_: builtins.attrNames) self.packages) {
    aarch64-linux = [
      "default"
      "kuutamod"
      "monitoring"
    ];
    x86_64-linux = [
      "default"
      "kuutamod"
      "monitoring"
      "neard"
    ];
  })
  (expectEq "monitoring package: checks the rules with promtool, installs contrib's files"
    {
      inherit (self.packages.${x86}.monitoring) name;
      promtool = map (d: d.name) self.packages.${x86}.monitoring.nativeBuildInputs;
      checks = lib.hasInfix "promtool check rules $src/prometheus/kuutamod-alerts.yml" self.packages.${x86}.monitoring.script;
    }
    {
      name = "kuutamod-monitoring";
      promtool = [ "prometheus-cli" ];
      checks = true;
    })
  (expectEq "checks per system" (lib.mapAttrs (_: builtins.attrNames) self.checks) {
    aarch64-linux = [
      "integration-tests"
      "kuutamod"
    ];
    x86_64-linux = [
      "failover"
      "failover-etcd"
      "integration-tests"
      "kuutamod"
      "single-node"
    ];
  })
  (expectEq "nixosModules" (builtins.attrNames self.nixosModules) [
    "default"
    "kuutamod"
  ])
  (expectEq "kuutamod package settings"
    {
      inherit (pkg)
        pname
        version
        cargoBuildFlags
        cargoTestFlags
        ;
      mainProgram = pkg.meta.mainProgram;
      lockFile = toString pkg.cargoLock.lockFile;
      default = self.packages.${x86}.default.name;
    }
    {
      pname = "kuutamod";
      version = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).package.version;
      cargoBuildFlags = [
        "-p"
        "kuutamod"
      ];
      cargoTestFlags = [
        "-p"
        "kuutamod"
        "--lib"
        "--bins"
      ];
      mainProgram = "kuutamod";
      lockFile = toString ../Cargo.lock;
      default = pkg.name;
    }
  )
  # What the source holds is scripts/check-nix-source's job (it copies it and runs cargo on
  # it); here only that the flake's package uses it, and that the integration tests use the
  # same filter plus contrib/ (tests/contrib/ reads the shipped rules and dashboard).
  (expect "the package builds from kuutamod-source, the integration tests from kuutamod-test-source"
    (
      lib.hasSuffix "-kuutamod-source" pkg.src
      && lib.hasSuffix "-kuutamod-test-source" checks.integration-tests.src
    )
    [ pkg.src checks.integration-tests.src ]
  )
  (expectEq "neard: near-sandbox 2.13.4 with the pinned hash and patched for NixOS"
    {
      inherit (neard.src) url hash;
      inherit (neard) sourceRoot;
      mainProgram = neard.meta.mainProgram;
      hooks = map (d: d.name) neard.nativeBuildInputs;
    }
    {
      url = "https://s3-us-west-1.amazonaws.com/build.nearprotocol.com/nearcore/Linux-x86_64/2.13.4/near-sandbox.tar.gz";
      hash = "sha256-VpCkY1FyJjzwJmg/dZZcrAndkWkSWE8ScJl0/tYgFj8=";
      sourceRoot = "Linux-x86_64";
      mainProgram = "neard";
      hooks = [ "auto-patchelf-hook" ];
    }
  )
  (expectEq "integration tests: whole workspace with Consul and etcd on PATH"
    {
      inherit (checks.integration-tests) cargoTestFlags cargoBuildFlags;
      inputs = map (d: d.name) checks.integration-tests.nativeCheckInputs;
      etcd = lib.hasInfix "export ETCD_BIN=/nix/store/" checks.integration-tests.preCheck
        && lib.hasInfix "-etcd-3.5.21/bin/etcd ETCD_35_BIN=" checks.integration-tests.preCheck;
    }
    {
      cargoTestFlags = [ "--workspace" ];
      cargoBuildFlags = [ "--workspace" ];
      inputs = [
        "consul-1.22.0"
        "etcd-3.5.21"
      ];
      etcd = true;
    }
  )
  (expect "plain nixpkgs refuses consul; the flake's checks and dev shell allow it explicitly" (
    !plainConsul.success && unfreeOk
  ) "unfree")
  (expect "apps.default runs the trial" (
    self.apps.${x86}.default.type == "app"
    && lib.hasSuffix "-kuutamod-trial/bin/kuutamod-trial" self.apps.${x86}.default.program
  ) self.apps.${x86}.default)
  (expectEq "dev shell tools" (map (d: d.name) self.devShells.${x86}.default.packages) [
    "cargo"
    "rustc"
    "clippy"
    "rustfmt"
    "consul-1.22.0"
    "jq"
    "curl"
    "neard-sandbox-2.13.4"
  ])
  (expectEq "failover test nodes" (builtins.attrNames failover.nodes) [
    "alpha"
    "beta"
    "chain"
    "consul"
  ])
  (expectEq "failover test: alpha's kuutamod settings pass the module's assertions" (failedAssertions alpha) [ ])
  (expectEq "failover-etcd test: an etcd VM instead of Consul" (builtins.attrNames failoverEtcd.nodes) [
    "alpha"
    "beta"
    "chain"
    "etcd"
  ])
  (expectEq "failover-etcd test: its name" failoverEtcd.name "kuutamod-failover-etcd")
  (expectEq "failover-etcd test: both hosts' kuutamod settings pass the module's assertions"
    (map failedAssertions [ alphaEtcd betaEtcd ]) [ [ ] [ ] ])
  (expectEq "failover-etcd test: both hosts lock in the etcd VM's member, with no Consul setting"
    (map (c: {
      inherit (c.systemd.services.kuutamod.environment) KUUTAMO_LOCK_BACKEND KUUTAMO_ETCD_ENDPOINTS;
      consul = c.systemd.services.kuutamod.environment ? KUUTAMO_CONSUL_URL;
    }) [ alphaEtcd betaEtcd ])
    (
      lib.replicate 2 {
        KUUTAMO_LOCK_BACKEND = "etcd";
        KUUTAMO_ETCD_ENDPOINTS = "http://192.168.1.4:2379";
        consul = false;
      }
    )
  )
  (expectEq "failover-etcd test: the etcd VM serves clients on every address and opens 2379"
    {
      inherit (etcdNode.services.etcd) enable listenClientUrls advertiseClientUrls;
      ports = etcdNode.networking.firewall.allowedTCPPorts;
    }
    {
      enable = true;
      listenClientUrls = [ "http://0.0.0.0:2379" ];
      advertiseClientUrls = [ "http://192.168.1.4:2379" ];
      ports = [ 2379 ];
    }
  )
  (expect "failover-etcd test: the test script waits for etcd, checks the invariant and crashes the leader"
    (
      let
        script = failoverEtcd.testScript { nodes = fakeNodes; };
      in
      lib.all (s: lib.hasInfix s script) [
        ''etcd.wait_for_unit("etcd.service")''
        "127.0.0.1:2379/health"
        "with at_most_one_validates:"
        "leader.crash()"
        "blocks-by node3"
      ]
      && !(lib.hasInfix "consul" script)
    )
    "testScript"
  )
  (expectEq "failover test: both hosts guard node3 with the shared keys and one voter key each"
    (map (c: {
      inherit (c.services.kuutamod) accountId consulUrl;
      creds = c.systemd.services.kuutamod.serviceConfig.LoadCredential;
    }) [ alpha beta ])
    (
      lib.replicate 2 {
        accountId = "node3";
        consulUrl = "http://192.168.1.4:8500";
        creds = [
          "validator_key.json:/run/kuutamod-keys/validator_key.json"
          "validator_node_key.json:/run/kuutamod-keys/validator_node_key.json"
          "voter_node_key.json:/run/kuutamod-keys/voter_node_key.json"
        ];
      }
    )
  )
  (expect "failover test: the hosts copy different voter keys"
    (
      lib.hasInfix "voter_a_node_key.json" alpha.systemd.services.kuutamod-test-keys.script
      && lib.hasInfix "voter_b_node_key.json" beta.systemd.services.kuutamod-test-keys.script
    )
    "voter keys"
  )
  (expectEq "failover test: the localnet is generated for the chain host's address"
    alpha.services.kuutamod.neardConfigFile
    "/nix/store/00000000000000000000000000000000-kuutamod-localnet/kuutamod-config.json"
  )
  (expect "failover test: the test script checks the invariant and crashes the leader"
    (
      let
        script = failover.testScript { nodes = fakeNodes; };
      in
      lib.all (s: lib.hasInfix s script) [
        "@polling_condition"
        "with at_most_one_validates:"
        "leader.crash()"
        "blocks-by node3"
      ]
    )
    "testScript"
  )
  (expectEq "VM sizes: 2 GiB per neard + 512 MiB; kuutamod hosts on 2 vCPUs (docs/nix.md)"
    (map (c: { inherit (c.virtualisation) memorySize cores; }) [ chain alpha beta singleMachine ])
    [
      {
        memorySize = 6656;
        cores = 4;
      }
      {
        memorySize = 2560;
        cores = 2;
      }
      {
        memorySize = 2560;
        cores = 2;
      }
      {
        memorySize = 3072;
        cores = 2;
      }
    ]
  )
  (expectEq "failover test: the chain VM runs neard node0..node2 and opens their p2p ports"
    {
      services = builtins.filter (lib.hasPrefix "neard-") (builtins.attrNames chain.systemd.services);
      ports = chain.networking.firewall.allowedTCPPorts;
    }
    {
      services = [
        "neard-node0"
        "neard-node1"
        "neard-node2"
      ];
      ports = [
        24570
        24571
        24572
      ];
    }
  )
  (expectEq "single-node test: its kuutamod settings pass the module's assertions"
    {
      failed = failedAssertions singleMachine;
      inherit (singleMachine.services.kuutamod) accountId consulUrl;
      consul = singleMachine.services.consul.enable;
      warnings = singleMachine.warnings;
    }
    {
      failed = [ ];
      accountId = "node0";
      consulUrl = "http://127.0.0.1:8500";
      consul = true;
      warnings = [ ];
    }
  )
]
