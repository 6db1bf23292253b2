# Type stubs for nixpkgs' NixOS test driver (`test_driver`), written for kuutamod from the
# driver's public interface (nixos/lib/test-driver in nixpkgs, 2026: BaseMachine, QemuMachine,
# NspawnMachine). They let scripts/check-vm-test-scripts type-check the VM tests' testScripts
# without nixpkgs. Only what a testScript can reach is declared; a method that is missing here
# makes a check fail (a false alarm to fix here), but a method declared here that the driver
# lacks would hide a real failure, so add only what the driver's source shows.
