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
#     worker = "/run/keys/bb-worker-token"; # the token workers present (optional
#                                  # with tls.workerCertificates)
#     scheduler = "/run/keys/bb-scheduler-token"; # the token the scheduler presents
#                                  # to storage nodes, under the name "scheduler"
#                                  # (needed with storage nodes)
#     policy = [ ];                # more rules, e.g. { identities = [ "ci" ];
#                                  # permissions = [ "execute" "read" "write-cas" ]; }
#   };
#   tls = {                        # optional: TLS everywhere, material from files
#     ca = "/run/keys/bb-ca.pem";
#     directory = "/run/keys";     # holds <host>.pem and <host>.key for each server
#     workerCertificates = false;  # workers present <host>.pem and <host>.key too, and
#                                  # the worker port takes only certificates of the
#                                  # description's workers (unless tokens.worker is set)
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
  workerToken = if tokens == null then null else tokens.worker or null;
  tls = description.tls or null;
  workerCertificates = tls != null && (tls.workerCertificates or false);
  anonymous = description.anonymousOnNetwork or false;
  # Storage nodes checking tokens let the scheduler in by its own.
  checked =
    if storageNodes != { } && tokens != null && !(tokens ? scheduler)
    then throw "mkFarm: storage nodes with tokens need tokens.scheduler, the token the scheduler presents to them"
    else if tokens != null && workerToken == null && !workerCertificates
    then throw "mkFarm: with tokens, workers need tokens.worker (or tls.workerCertificates)"
    else true;

  scheme = if tls == null then "grpc" else "grpcs";
  endpoint = address: port: "${scheme}://${address}:${toString port}";

  # A host's own certificate and key, from the TLS directory.
  hostCertificate = host: {
    certificate = "${tls.directory}/${host}.pem";
    privateKey = "${tls.directory}/${host}.key";
  };
  # What a server needs to let its peers in: TLS material and the tokens.
  serverCredentials = host:
    optionalAttrs (tls != null) (hostCertificate host)
    // optionalAttrs (tokens != null) { tokensFile = tokens.file; };
  serverSettings = optionalAttrs anonymous { authentication.anonymous_on_network = true; };

  # What the scheduler presents to the storage nodes, and the keys of each
  # grpc leaf that present it.
  schedulerStorageCredentials = optionalAttrs (storageNodes != { })
    (optionalAttrs (tls != null) { storageCa = tls.ca; }
      // optionalAttrs (tokens != null) { storageToken = tokens.scheduler; });
  leafCredentials = import ./storage-client.nix { inherit lib; } schedulerStorageCredentials;

  # The scheduler's storage: embedded, or sharded over the storage nodes.
  shardedStorage = {
    backend = "sharding";
    inherit copies;
    shards = mapAttrsToList
      (host: node: { name = host; store = { backend = "grpc"; endpoint = endpoint node.address ports.storage; } // leafCredentials; })
      storageNodes;
  };
  # Forced: the embedded defaults' disk keys must not stay beside them.
  nodeStorage = optionalAttrs (storageNodes != { }) {
    storage = {
      cas = lib.mkForce shardedStorage;
      action_cache = { completeness_check = true; store = lib.mkForce shardedStorage; };
    };
  };

  # The workers' identities (their token's name, their certificates' host
  # names) may do what workers do; with certificates alone, nothing else
  # is taken on the worker port.
  workerIdentities = lib.optional (workerToken != null) "worker"
    ++ lib.optionals workerCertificates (lib.attrNames workers);
  schedulerPolicy = optionalAttrs (tokens != null || workerCertificates) {
    authentication = {
      policy = [{ identities = workerIdentities; permissions = [ "worker" ]; }]
        ++ (if tokens == null then [ ] else tokens.policy or [ ]);
    } // optionalAttrs (workerCertificates && workerToken == null) { listeners.worker = [ "certificate" ]; };
  };
  # Storage nodes serve the scheduler alone.
  storagePolicy = optionalAttrs (tokens != null) {
    authentication.policy = [{ identities = [ "scheduler" ]; permissions = [ "read" "write-cas" "write-action-cache" ]; }];
  };

  schedulerModule = {
    networking.hostName = scheduler.host;
    services.buildbarn.scheduler = {
      enable = true;
      openFirewall = true;
      openFirewallStatusPage = scheduler.openStatusPage;
      credentials = serverCredentials scheduler.host // schedulerStorageCredentials
        // optionalAttrs workerCertificates { clientCa = tls.ca; };
      settings = lib.foldl' lib.recursiveUpdate { } [ serverSettings schedulerPolicy nodeStorage scheduler.settings ];
    };
  };

  storageModule = host: node: {
    networking.hostName = host;
    services.buildbarn.storage = {
      enable = true;
      openFirewall = true;
      credentials = serverCredentials host;
      # The scheduler checks results against the whole CAS; a node holds a share.
      settings = lib.foldl' lib.recursiveUpdate { } [
        serverSettings
        storagePolicy
        { storage.action_cache.completeness_check = false; }
        node.settings
      ];
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
        // optionalAttrs workerCertificates (hostCertificate host)
        // optionalAttrs (workerToken != null) { token = workerToken; };
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
