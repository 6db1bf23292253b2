# The prebuilt near-sandbox 2.13.4 tarballs the flake packages as neard, by Nix system. A
# system is listed only with a hash from a published source confirmed by a second, independent
# one: a fixed-output fetch is exactly as trustworthy as its hash. NEAR publishes Linux-aarch64
# tarballs under the same layout but no checksum; one public Nix expression lists a hash for
# it, which nothing here could confirm, so aarch64-linux has no neard, no VM tests and no trial
# yet. docs/nix.md gives that hash and the one command that confirms it before it is added.
# The flake enables neard, the VM tests, the trial and the dev shell's neard for exactly the
# systems listed here.
{
  x86_64-linux = {
    # The tarball holds <platform>/near-sandbox.
    platform = "Linux-x86_64";
    hash = "sha256-VpCkY1FyJjzwJmg/dZZcrAndkWkSWE8ScJl0/tYgFj8=";
  };
}
