# Failover on etcd: failover.nix with the lock in etcd instead of Consul (KUUTAMO_LOCK_BACKEND=
# etcd): an `etcd` VM runs one member of nixpkgs' services.etcd, both kuutamod hosts use it;
# exactly one validates, the standby takes over when the leader crashes, the old leader comes
# back as a standby.
args: import ./failover.nix (args // { store = "etcd"; })
