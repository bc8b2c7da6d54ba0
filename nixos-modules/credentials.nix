# Secret files handed to a service with systemd's LoadCredential=: they
# stay where the operator keeps them (never in the Nix store, never in a
# world-readable path), and the service reads its private copies under
# /run/credentials/<unit>.service/. A copy is made when the service starts:
# after replacing a file, restart the service.
{ lib }:
let
  inherit (lib) filterAttrs mapAttrs mapAttrsToList mkOption types;
in
{
  # One option per file, from { name = description; }.
  options = files: mapAttrs
    (name: description: mkOption {
      type = types.nullOr (types.strMatching "/.+");
      default = null;
      example = "/run/keys/bb-${name}";
      description = ''
        ${description} An absolute path, as a string (a Nix path literal
        would copy the secret into the store); passed with LoadCredential=.
      '';
    })
    files;

  # The LoadCredential= entries for the files that are set.
  loadCredential = files: mapAttrsToList (name: path: "${name}:${path}") (filterAttrs (_: path: path != null) files);

  # Where the service `unit` reads credential `name`.
  path = unit: name: "/run/credentials/${unit}.service/${name}";
}
