# services.buildbarn.scheduler: the build queue and the clients' REv2
# endpoint (with embedded storage unless settings say otherwise).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.buildbarn.scheduler;
  toml = pkgs.formats.toml { };
  storageDefaults = import ./storage-defaults.nix { inherit lib; };
  credentials = import ./server-credentials.nix { inherit lib; };
  files = import ./credentials.nix { inherit lib; };
  # What the scheduler presents to the storage it reaches over the network:
  # remoteStorage, or the grpc leaves of settings.storage.
  storageCredentials = files.options {
    storageCa = "The CA (PEM) a grpcs:// storage endpoint's certificate must chain to.";
    storageToken = "A file holding the bearer token the scheduler presents to its storage.";
  };
  # The settings of a storage client (remote_storage, a grpc leaf) that
  # present those credentials; the farm function uses it for its nodes.
  storageClient = import ./storage-client.nix { inherit lib; };
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
in
{
  options.services.buildbarn.scheduler = {
    enable = mkEnableOption "bb-scheduler, the build farm's queue and REv2 endpoint";

    package = mkOption {
      type = types.package;
      default = pkgs.bb-scheduler;
      defaultText = lib.literalExpression "pkgs.bb-scheduler";
      description = "The package providing bin/bb-scheduler.";
    };

    clientPort = mkOption {
      type = types.port;
      default = 8980;
      description = "Port of the client API (REv2 Execution, Capabilities, Operations and embedded storage).";
    };

    workerPort = mkOption {
      type = types.port;
      default = 8983;
      description = "Port of the worker API (buildbarn.remoteworker.OperationQueue).";
    };

    httpPort = mkOption {
      type = types.nullOr types.port;
      default = 7982;
      description = "Port of the status page and Prometheus /metrics; null serves neither.";
    };

    remoteStorage = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "grpc://storage.example.org:8981";
      description = ''
        Endpoint of a standalone bb-storage. When null (the default) the
        scheduler embeds storage under /var/lib/bb-scheduler. Either way the
        client port serves the CAS, Action Cache and ByteStream (forwarded
        to this endpoint when set), so clients need only the scheduler.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the client and worker ports in the firewall (the status page's only with openFirewallStatusPage).";
    };

    openFirewallStatusPage = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open the status page's port too. Closed by default, so the status
        page (and drain, undrain) is reached from the host itself, through
        SSH or a proxy, while the client port is open to the network.
      '';
    };

    credentials = credentials.options // storageCredentials;

    settings = mkOption {
      inherit (toml) type;
      default = { };
      description = ''
        bb-scheduler's configuration (TOML), merged over defaults that match
        the program's own (see `bb-scheduler --print-default-config`), with
        state under /var/lib/bb-scheduler.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = credentials.assertions "scheduler" cfg;
    services.buildbarn.scheduler.settings = credentials.settings "bb-scheduler" cfg.credentials // {
      client_listen = mkDefault [ "[::]:${toString cfg.clientPort}" ];
      worker_listen = mkDefault [ "[::]:${toString cfg.workerPort}" ];
      http_listen = mkIf (cfg.httpPort != null) (mkDefault "[::]:${toString cfg.httpPort}");
      log = {
        format = mkDefault "text";
        level = mkDefault "info";
      };
      scheduler = {
        instance_names = mkDefault [ ];
        platform_matching = mkDefault "subset";
        default_action_timeout = mkDefault "30m";
        maximum_action_timeout = mkDefault "3h";
        keepalive_interval = mkDefault "30s";
        client_disconnect_grace = mkDefault "60s";
        completed_retention = mkDefault "60s";
        worker_timeout = mkDefault "60s";
        executing_sync_interval = mkDefault "10s";
        idle_sync_wait = mkDefault "30s";
        max_attempts = mkDefault 3;
        unmatched_platform_timeout = mkDefault "60s";
      };
      remote_storage = mkIf (cfg.remoteStorage != null) ({ endpoint = cfg.remoteStorage; } // storageClient cfg.credentials);
      storage = mkIf (cfg.remoteStorage == null) (storageDefaults "/var/lib/bb-scheduler");
    };

    users.users.bb-scheduler = {
      isSystemUser = true;
      group = "bb-scheduler";
      description = "Buildbarn scheduler";
    };
    users.groups.bb-scheduler = { };

    systemd.services.bb-scheduler = {
      description = "Buildbarn scheduler (bb-scheduler)";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      environment = credentials.environment "bb-scheduler" cfg.credentials;
      serviceConfig = {
        LoadCredential = credentials.loadCredential cfg.credentials;
        ExecStart = "${cfg.package}/bin/bb-scheduler --config ${toml.generate "bb-scheduler.toml" cfg.settings}";
        User = "bb-scheduler";
        Group = "bb-scheduler";
        StateDirectory = "bb-scheduler";
        StateDirectoryMode = "0700";
        WorkingDirectory = "/var/lib/bb-scheduler";
        Restart = "on-failure";
        # Clients re-attach with WaitExecution; give them time to notice.
        TimeoutStopSec = "20s";
        LimitNOFILE = 65536;

        # Only network service and its own state.
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        UMask = "0077";
      };
    };

    networking.firewall.allowedTCPPorts = lib.optionals cfg.openFirewall [ cfg.clientPort cfg.workerPort ]
      ++ lib.optional (cfg.openFirewallStatusPage && cfg.httpPort != null) cfg.httpPort;
  };
}
