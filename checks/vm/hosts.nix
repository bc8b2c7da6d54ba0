# The NixOS modules of a VM test's farm: the farm function over
# `description`, each host with the flake's modules, this checkout's
# programs and `extra host` (what the test adds to that host).
{ lib, module, packages }:
description: extra:
lib.mapAttrs (host: farmHost: { imports = [ module farmHost (import ./programs.nix packages) (extra host) ]; })
  (import ../../nixos-modules/farm.nix { inherit lib; } description)
