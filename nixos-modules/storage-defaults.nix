# The defaults of a `[storage]` table, as bb-storage and bb-scheduler's
# embedded storage have them, with the stores under `stateDirectory`. Every
# value is a mkDefault, so settings override any of them.
{ lib }:
stateDirectory:
let
  inherit (lib) mkDefault;
  store = name: maxSize: {
    backend = mkDefault "disk";
    path = mkDefault "${stateDirectory}/${name}";
    max_size = mkDefault maxSize;
    sync_writes = mkDefault true;
  };
in
{
  instance_names = mkDefault [ ];
  max_message_size = mkDefault "16MiB";
  max_batch_size = mkDefault "4MiB";
  cas = store "cas" "10GiB";
  action_cache = {
    allow_updates = mkDefault true;
    completeness_check = mkDefault true;
    max_inline_size = mkDefault "1MiB";
    store = store "ac" "1GiB";
  };
}
