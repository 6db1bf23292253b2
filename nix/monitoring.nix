# kuutamod's monitoring files from contrib/, for hosts that run Prometheus or Grafana with Nix:
#   share/kuutamod/prometheus/kuutamod-alerts.yml   alert rules (services.prometheus.ruleFiles)
#   share/kuutamod/grafana/kuutamod.json            dashboard (Grafana dashboard provisioning)
#   share/kuutamod/neard-metrics.txt                neard metrics the two use
# The build runs `promtool check rules` on the rules, so a package that builds has rules
# Prometheus loads. (CI also runs the rules' unit tests with a pinned promtool 2.42:
# scripts/check-contrib.)
{
  lib,
  runCommand,
  prometheus,
}:
runCommand "kuutamod-monitoring"
  {
    # Only contrib/: changes elsewhere do not rebuild this.
    src = builtins.path {
      name = "kuutamod-contrib";
      path = ../contrib;
    };
    nativeBuildInputs = [ (lib.getOutput "cli" prometheus) ];
    meta = {
      description = "Prometheus alert rules and a Grafana dashboard for kuutamod";
      homepage = "https://github.com/kuutamolabs/kuutamod";
      license = lib.licenses.mit;
      platforms = lib.platforms.all;
    };
  }
  ''
    promtool check rules $src/prometheus/kuutamod-alerts.yml
    mkdir -p $out/share/kuutamod
    cp -r $src/prometheus $src/grafana $src/neard-metrics.txt $out/share/kuutamod/
  ''
