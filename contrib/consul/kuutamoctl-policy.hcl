# Consul ACL policy for an operator's kuutamoctl (docs/operations.md, "Consul ACLs").
#
# Replace @ACCOUNT_ID@ and @CONSUL_NODE_PREFIX@ as in kuutamod-policy.hcl.
#
# `kuutamoctl status` and `active-validator` read; `pause`, `resume` and `switchover` write the
# control record, which every kuutamod of the account watches.

key "kuutamod-leader/@ACCOUNT_ID@" {
  policy = "read"
}

key_prefix "kuutamod/@ACCOUNT_ID@/" {
  policy = "read"
}

key "kuutamod/@ACCOUNT_ID@/control" {
  policy = "write"
}

# kuutamoctl asks whether the lock holder's session still exists (exit 2 when it does not).
session_prefix "@CONSUL_NODE_PREFIX@" {
  policy = "read"
}
