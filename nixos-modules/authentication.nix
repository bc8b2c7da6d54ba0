# Whether a program's settings let it serve a network: a credential method
# in [authentication], or the operator's word that the network is closed.
# The programs refuse to start otherwise; the modules say so at evaluation.
{ lib }:
settings:
let
  authentication = settings.authentication or { };
  isSet = name: (authentication.${name} or null) != null;
in
lib.any isSet [ "client_ca" "tokens_file" "jwt" ] || (authentication.anonymous_on_network or false)
