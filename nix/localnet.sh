#!/usr/bin/env bash
# Generates a 4-validator NEAR localnet for kuutamod's VM tests and the trial app (test keys!).
#
#   localnet.sh OUT [CHAIN_HOST] [P2P_BASE] [RPC_BASE] [BIND]
#
# `neard localnet --v 4 --n 2` writes node0..node5; keys come from fixed seeds, so they are the
# same on every run. node0..node2 become the chain (homes OUT/node0..2, to run on CHAIN_HOST);
# node3 is the validator kuutamod guards: its validator key and node key go to OUT/keys, shared
# by both kuutamod nodes, and node4/node5's node keys become their voter node keys.
#
# Edits, all with jq:
# - genesis: every *kickout_threshold set to 0, so node3 keeps its seat while kuutamod is not
#   yet (or no longer) running it; otherwise an epoch with too few of its blocks kicks it out.
#   With 4 equal stakes, 3 validators online exceed the 2/3 doomslug needs: the chain advances
#   while node3 is down (docs/neard.md, section 8).
# - chain node i: network.addr BIND:P2P_BASE+i (BIND: 0.0.0.0 by default, for kuutamod hosts
#   on other machines; the trial passes 127.0.0.1), rpc.addr 127.0.0.1:RPC_BASE+i, boot nodes =
#   the other chain nodes on 127.0.0.1, consensus.min_num_peers 2 (each sees the other two).
# - OUT/kuutamod-config.json: node3's config with boot nodes = the three chain nodes on
#   CHAIN_HOST, rpc.addr 127.0.0.1:3030, min_num_peers 1. kuutamod sets network.addr itself.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 OUT [CHAIN_HOST] [P2P_BASE] [RPC_BASE] [BIND]" >&2
  exit 2
fi
out=$1 host=${2:-127.0.0.1} p2p=${3:-24570} rpc=${4:-3030} bind=${5:-0.0.0.0}

gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
neard --home "$gen" localnet --v 4 --n 2 --prefix node >"$gen.log" 2>&1 || {
  cat "$gen.log" >&2
  exit 1
}
rm -f "$gen.log"

mkdir -p "$out/keys"
jq 'with_entries(if (.key | endswith("kickout_threshold")) then .value = 0 else . end)' \
  "$gen/node0/genesis.json" >"$out/genesis.json"

peer() { # peer <node index> <host> -> ed25519:<node key>@host:port
  printf '%s@%s:%s' "$(jq -r .public_key "$gen/node$1/node_key.json")" "$2" "$((p2p + $1))"
}

for i in 0 1 2; do
  home=$out/node$i
  mkdir -p "$home"
  boot=()
  for j in 0 1 2; do
    [ "$j" = "$i" ] || boot+=("$(peer "$j" 127.0.0.1)")
  done
  jq --arg addr "$bind:$((p2p + i))" --arg rpc "127.0.0.1:$((rpc + i))" \
    --arg boot "$(IFS=,; echo "${boot[*]}")" \
    '.network.addr = $addr | .rpc.addr = $rpc | .network.boot_nodes = $boot
     | .network.skip_sync_wait = false | .consensus.min_num_peers = 2' \
    "$gen/node$i/config.json" >"$home/config.json"
  cp "$out/genesis.json" "$home/genesis.json"
  cp "$gen/node$i/node_key.json" "$gen/node$i/validator_key.json" "$home/"
done

jq --arg boot "$(peer 0 "$host"),$(peer 1 "$host"),$(peer 2 "$host")" \
  '.network.boot_nodes = $boot | .rpc.addr = "127.0.0.1:3030"
   | .network.skip_sync_wait = false | .consensus.min_num_peers = 1' \
  "$gen/node3/config.json" >"$out/kuutamod-config.json"

cp "$gen/node3/validator_key.json" "$out/keys/validator_key.json"
cp "$gen/node3/node_key.json" "$out/keys/validator_node_key.json"
cp "$gen/node4/node_key.json" "$out/keys/voter_a_node_key.json"
cp "$gen/node5/node_key.json" "$out/keys/voter_b_node_key.json"
jq -r .account_id "$out/keys/validator_key.json" >"$out/validator-account"
chmod 0600 "$out"/keys/*.json "$out"/node*/*_key.json
