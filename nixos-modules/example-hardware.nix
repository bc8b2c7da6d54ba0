# The operator's part of each example host: replace this file with the
# host's own hardware-configuration.nix (from nixos-generate-config). It
# only lets the example hosts build, and run as VMs with build-vm.
{ lib, ... }:
{
  fileSystems."/" = lib.mkDefault { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  boot.loader.grub.device = lib.mkDefault "nodev";
  system.stateVersion = lib.mkDefault "25.05";
}
