# A whole farm described once: `mkFarm description` returns one NixOS
# module per host (to be combined with this flake's nixosModules.default
# and the host's hardware configuration), every cross-host detail derived:
# endpoints, host names, worker names, which ports each host opens, the
# credentials each host loads. Adding a worker to `workers` adds one host
# and changes no other.
#
# description = {
#   scheduler = {
#     host = "scheduler";          # its host name, and the attribute of its module
#     address = "scheduler";       # how the others reach it (default: host)
#     openStatusPage = false;      # open the status page's port to the network
#     settings = { };              # merged into services.buildbarn.scheduler.settings
#   };
#   storage = {                    # optional; without it the scheduler embeds storage
#                                  # (not yet with tls or tokens)
#     nodes = { storage1 = { address = "storage1"; settings = { }; }; };
#     copies = 2;                  # copies of each blob across the nodes
#   };
#   workers = {
#     worker1 = {
#       concurrency = 0;           # action slots; 0 is one per core
#       platform = { };            # extra platform properties, name = value
#       cacheSize = "10GiB";       # the file cache's bound
#       toolchain = pkgs: [ pkgs.gcc pkgs.binutils pkgs.coreutils ]; # what actions find on their PATH
#       settings = { };            # merged into services.buildbarn.worker.settings
#     };
#   };
#   tokens = {                     # optional: bearer tokens, from files on the hosts
#     file = "/run/keys/bb-tokens.toml";   # the servers' tokens (name = hex SHA-256),
#                                  # the workers' under the name "worker"
#     worker = "/run/keys/bb-worker-token"; # the token workers present
#     policy = [ ];                # more rules, e.g. { identities = [ "ci" ];
#                                  # permissions = [ "execute" "read" "write-cas" ]; }
#   };
#   tls = {                        # optional: TLS everywhere, material from files
#     ca = "/run/keys/bb-ca.pem";
#     directory = "/run/keys";     # holds <host>.pem and <host>.key for each server
#   };
#   anonymousOnNetwork = false;    # serve without authentication (closed networks only)
# }
{ lib }:
description:
let
  inherit (lib) mapAttrs mapAttrsToList optionalAttrs;
  ports = { client = 8980; worker = 8983; status = 7982; storage = 8981; };

  scheduler = { openStatusPage = false; settings = { }; } // description.scheduler;
  schedulerAddress = scheduler.address or scheduler.host;
  storageNodes = mapAttrs (host: node: { address = host; settings = { }; } // node)
    ((description.storage or { }).nodes or { });
  copies = (description.storage or { }).copies or 2;
  workers = mapAttrs (_: worker: { concurrency = 0; platform = { }; cacheSize = "10GiB"; toolchain = _: [ ]; settings = { }; } // worker)
    description.workers;
  tokens = description.tokens or null;
  tls = description.tls or null;
  anonymous = description.anonymousOnNetwork or false;
  # The scheduler reaching storage nodes with TLS or a token needs
  # credentials of its own for them, which the scheduler module cannot
  # load yet; refused rather than deployed half secured.
  checked =
    if storageNodes != { } && (tls != null || tokens != null)
    then throw "mkFarm: storage nodes with tls or tokens are not supported yet; use anonymousOnNetwork on a closed network, or no storage nodes"
    else true;

  scheme = if tls == null then "grpc" else "grpcs";
  endpoint = address: port: "${scheme}://${address}:${toString port}";

  # What a server needs to let its peers in: TLS material and the tokens.
  serverCredentials = host:
    optionalAttrs (tls != null)
      {
        certificate = "${tls.directory}/${host}.pem";
        privateKey = "${tls.directory}/${host}.key";
      } // optionalAttrs (tokens != null) { tokensFile = tokens.file; };
  serverSettings = optionalAttrs anonymous { authentication.anonymous_on_network = true; };

  # The scheduler's storage: embedded, or sharded over the storage nodes.
  shardedStorage = {
    backend = "sharding";
    inherit copies;
    shards = mapAttrsToList
      (host: node: { name = host; store = { backend = "grpc"; endpoint = endpoint node.address ports.storage; }; })
      storageNodes;
  };
  # Forced: the embedded defaults' disk keys must not stay beside them.
  nodeStorage = optionalAttrs (storageNodes != { }) {
    storage = {
      cas = lib.mkForce shardedStorage;
      action_cache = { completeness_check = true; store = lib.mkForce shardedStorage; };
    };
  };

  # With tokens, the workers' identity may do what workers do.
  tokenPolicy = optionalAttrs (tokens != null) {
    authentication.policy = [{ identities = [ "worker" ]; permissions = [ "worker" ]; }] ++ (tokens.policy or [ ]);
  };

  schedulerModule = {
    networking.hostName = scheduler.host;
    services.buildbarn.scheduler = {
      enable = true;
      openFirewall = true;
      openFirewallStatusPage = scheduler.openStatusPage;
      credentials = serverCredentials scheduler.host;
      settings = lib.foldl' lib.recursiveUpdate { } [ serverSettings tokenPolicy nodeStorage scheduler.settings ];
    };
  };

  storageModule = host: node: {
    networking.hostName = host;
    services.buildbarn.storage = {
      enable = true;
      openFirewall = true;
      credentials = serverCredentials host;
      # The scheduler checks results against the whole CAS; a node holds a share.
      settings = lib.recursiveUpdate (serverSettings // { storage.action_cache.completeness_check = false; }) node.settings;
    };
  };

  workerModule = host: worker: { pkgs, ... }: {
    networking.hostName = host;
    services.buildbarn.worker = {
      enable = true;
      toolchain = worker.toolchain pkgs;
      schedulerEndpoint = endpoint schedulerAddress ports.worker;
      storageEndpoint = endpoint schedulerAddress ports.client;
      credentials = optionalAttrs (tls != null) { inherit (tls) ca; }
        // optionalAttrs (tokens != null) { token = tokens.worker; };
      settings = lib.recursiveUpdate
        {
          inherit (worker) concurrency;
          cache_max_size = worker.cacheSize;
        }
        worker.settings;
      platformProperties = worker.platform;
    };
  };
in
assert checked;
{ ${scheduler.host} = schedulerModule; }
// mapAttrs storageModule storageNodes
  // mapAttrs workerModule workers
