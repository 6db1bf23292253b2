#!/usr/bin/env bash
# kuutamod trial (`nix run`): on this machine, a Consul dev agent, a 4-validator NEAR localnet
# (3 validators as plain neard) and two kuutamod nodes guarding the 4th validator. It prints
# which node validates, crashes that node (SIGKILL to kuutamod and its neard) and shows the other
# one take over. Ctrl-C stops everything it started.
#
# Ports: KUUTAMO_TRIAL_PORT_BASE (default 25000) and the next 50. KUUTAMO_TRIAL_KEEP=1 keeps the
# working directory (logs, neard homes) after the end.
set -euo pipefail

base=${KUUTAMO_TRIAL_PORT_BASE:-25000}
consul_port=$base
chain_p2p=$((base + 10))
chain_rpc=$((base + 20))

dir=$(mktemp -d "${TMPDIR:-/tmp}/kuutamod-trial.XXXXXX")
pids=()

cleanup() {
  trap - EXIT INT TERM
  echo
  echo "trial: stopping everything it started"
  # kuutamod stops its own neard on SIGTERM; the chain neards and Consul stop on SIGTERM too.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${KUUTAMO_TRIAL_KEEP:-}" ]; then
    echo "trial: logs and homes kept in $dir"
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every second.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "gave up after ${limit}s waiting for $what (logs: $dir, kept)"
      KUUTAMO_TRIAL_KEEP=1
      exit 1
    fi
    sleep 1
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $(seq "$base" $((base + 50))); do
  if ! port_free "$p"; then
    echo "trial: port $p is in use; choose other ports with KUUTAMO_TRIAL_PORT_BASE" >&2
    exit 1
  fi
done

say "working directory $dir"
say "starting a Consul dev agent on 127.0.0.1:$consul_port"
consul agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$consul_port" \
  -dns-port -1 -grpc-port -1 -grpc-tls-port -1 -serf-lan-port $((base + 1)) \
  -serf-wan-port $((base + 2)) -server-port $((base + 3)) -log-level warn \
  >"$dir/consul.log" 2>&1 &
pids+=($!)
consul_leader() { curl -sf "http://127.0.0.1:$consul_port/v1/status/leader" | grep -q 127.0.0.1; }
wait_until 60 "Consul to elect itself" consul_leader

say "generating a 4-validator localnet (test keys)"
# Everything the trial starts listens on 127.0.0.1 only (the chain's p2p ports too).
kuutamod-localnet "$dir/localnet" 127.0.0.1 "$chain_p2p" "$chain_rpc" 127.0.0.1
account=$(cat "$dir/localnet/validator-account")

for i in 0 1 2; do
  cp -r "$dir/localnet/node$i" "$dir/chain$i"
  neard --home "$dir/chain$i" run >"$dir/chain$i.log" 2>&1 &
  pids+=($!)
done
chain_head() { curl -sf --max-time 5 "http://127.0.0.1:$chain_rpc/status" | jq -e .sync_info.latest_block_height; }
chain_moves() { [ "$(chain_head)" -gt 3 ]; }
say "chain: node0..node2 running (3 of 4 validators); waiting for blocks"
wait_until 300 "the chain to produce blocks" chain_moves

declare -A kuutamod_pid exporter
start_kuutamod() { # start_kuutamod NAME VOTER_KEY OFFSET
  local name=$1 voter=$2 off=$3 home=$dir/$1
  mkdir -p "$home"
  jq --arg rpc "127.0.0.1:$((base + off + 2))" '.rpc.addr = $rpc' \
    "$dir/localnet/kuutamod-config.json" >"$home/config.json"
  cp "$dir/localnet/genesis.json" "$home/genesis.json"
  exporter[$name]=127.0.0.1:$((base + off + 3))
  KUUTAMO_NODE_ID=$name \
    KUUTAMO_ACCOUNT_ID=$account \
    KUUTAMO_CONSUL_URL=http://127.0.0.1:$consul_port \
    KUUTAMO_EXPORTER_ADDRESS=${exporter[$name]} \
    KUUTAMO_VALIDATOR_KEY=$dir/localnet/keys/validator_key.json \
    KUUTAMO_VALIDATOR_NODE_KEY=$dir/localnet/keys/validator_node_key.json \
    KUUTAMO_VOTER_NODE_KEY=$dir/localnet/keys/$voter \
    KUUTAMO_NEARD_HOME=$home \
    KUUTAMO_NEARD_BIN=$(command -v neard) \
    KUUTAMO_VALIDATOR_NETWORK_ADDR=127.0.0.1:$((base + off)) \
    KUUTAMO_VOTER_NETWORK_ADDR=127.0.0.1:$((base + off + 1)) \
    KUUTAMO_SESSION_TTL=10s \
    KUUTAMO_NEARD_STOP_GRACE=3s \
    kuutamod >"$dir/$name.log" 2>&1 &
  kuutamod_pid[$name]=$!
  pids+=($!)
}
start_kuutamod alpha voter_a_node_key.json 30
start_kuutamod beta voter_b_node_key.json 40
say "kuutamod alpha (metrics http://${exporter[alpha]}/metrics) and beta (http://${exporter[beta]}/metrics) guard validator $account"

validates() { curl -sf --max-time 5 "http://${exporter[$1]}/metrics" | grep -qF 'kuutamod_state{type="Validating"} 1'; }
validator() {
  local n
  for n in alpha beta; do
    if validates "$n"; then echo "$n"; fi
  done
}
someone_validates() { [ -n "$(validator)" ]; }
export KUUTAMO_ACCOUNT_ID=$account KUUTAMO_CONSUL_URL=http://127.0.0.1:$consul_port

wait_until 300 "a kuutamod to validate" someone_validates
leader=$(validator)
say "validating: $leader (kuutamoctl active-validator: $(kuutamoctl active-validator || true))"
standby=alpha
[ "$leader" = alpha ] && standby=beta

sleep 10
neard_pid=$(pgrep -P "${kuutamod_pid[$leader]}" || true)
say "crashing $leader: SIGKILL to kuutamod (pid ${kuutamod_pid[$leader]}) and its neard (pid ${neard_pid:-none})"
kill -KILL "${kuutamod_pid[$leader]}" ${neard_pid:+"$neard_pid"}
crashed=$SECONDS
say "$standby takes over once $leader's Consul session expires (TTL 10s, up to twice that)"
wait_until 300 "$standby to take over" validates "$standby"
say "validating: $standby, $((SECONDS - crashed))s after the crash (kuutamoctl: $(kuutamoctl active-validator || true))"

say "running on; Ctrl-C stops everything"
while true; do
  sleep 10
  say "chain head $(chain_head || echo '?'), validating: $(validator | tr '\n' ' ')"
done
