# Consul ACL policy for kuutamod on ONE host (docs/operations.md, "Consul ACLs").
#
# Replace before use:
#   @ACCOUNT_ID@          the validator account (the validator key's account_id)
#   @NODE_ID@             this host's KUUTAMO_NODE_ID
#   @CONSUL_NODE_PREFIX@  a prefix shared by the Consul node names (agent -node) of every host
#                         of this validator, e.g. "mypool-" for mypool-a and mypool-b
#
#   sed -e s/@ACCOUNT_ID@/mypool.poolv1.near/g -e s/@NODE_ID@/mypool-a/g \
#       -e s/@CONSUL_NODE_PREFIX@/mypool-/g kuutamod-policy.hcl > kuutamod-mypool-a.hcl
#
# What kuutamod does with each rule (src/consul.rs):

# The leader lock: acquire and heartbeat (transactions: check-index, then lock), release,
# watch (blocking reads), and a consistent read before it destroys a silent holder's session.
key "kuutamod-leader/@ACCOUNT_ID@" {
  policy = "write"
}

# The account's records: kuutamod watches the whole prefix (every node's status record and the
# control record that `kuutamoctl pause` and `switchover` write) ...
key_prefix "kuutamod/@ACCOUNT_ID@/" {
  policy = "read"
}

# ... and writes only its own status record. The control record is the operator's (see
# kuutamoctl-policy.hcl): a kuutamod token cannot pause the cluster or order a switchover.
key "kuutamod/@ACCOUNT_ID@/nodes/@NODE_ID@" {
  policy = "write"
}

# Sessions: kuutamod creates and renews its session on its local agent's node, destroys it
# when it stops, and a standby destroys the session of a leader that went silent for a TTL,
# which lives on the other host's node. Hence write on every node of the set, not only this one.
session_prefix "@CONSUL_NODE_PREFIX@" {
  policy = "write"
}
