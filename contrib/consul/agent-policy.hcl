# Consul ACL policy for the client agent on one kuutamod host (its `acl.tokens.agent`), so that
# it can register its node and answer for it. Replace @CONSUL_NODE@ with the agent's node name.

node "@CONSUL_NODE@" {
  policy = "write"
}

service_prefix "" {
  policy = "read"
}
