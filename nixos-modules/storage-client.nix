# The keys of a scheduler's storage client (`remote_storage`, or a `grpc`
# leaf of its storage tree) that present the scheduler's storageCa and
# storageToken credentials, given its credentials: { } when neither is set.
{ lib }:
let
  path = (import ./credentials.nix { inherit lib; }).path "bb-scheduler";
in
files:
lib.optionalAttrs (files.storageCa or null != null) { tls.ca = path "storageCa"; }
  // lib.optionalAttrs (files.storageToken or null != null) { token_file = path "storageToken"; }
