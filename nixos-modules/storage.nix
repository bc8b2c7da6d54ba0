# services.buildbarn.storage: a standalone bb-storage (CAS, Action Cache,
# ByteStream), for farms whose storage scales apart from the scheduler.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.buildbarn.storage;
  toml = pkgs.formats.toml { };
  storageDefaults = import ./storage-defaults.nix { inherit lib; };
  credentials = import ./server-credentials.nix { inherit lib; };
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
in
{
  options.services.buildbarn.storage = {
    enable = mkEnableOption "bb-storage, the build farm's CAS and Action Cache";

    package = mkOption {
      type = types.package;
      default = pkgs.bb-storage;
      defaultText = lib.literalExpression "pkgs.bb-storage";
      description = "The package providing bin/bb-storage.";
    };

    port = mkOption {
      type = types.port;
      default = 8981;
      description = "Port of the gRPC storage API.";
    };

    httpPort = mkOption {
      type = types.nullOr types.port;
      default = 7981;
      description = "Port of Prometheus /metrics; null serves none.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the gRPC port in the firewall (the metrics port only with openFirewallMetrics).";
    };

    openFirewallMetrics = mkOption {
      type = types.bool;
      default = false;
      description = "Open the metrics port too, for a Prometheus on another host.";
    };

    credentials = credentials.options;

    settings = mkOption {
      inherit (toml) type;
      default = { };
      description = ''
        bb-storage's configuration (TOML), merged over defaults that match the
        program's own (see `bb-storage --print-default-config`), with the
        stores under /var/lib/bb-storage.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = credentials.assertions "storage" cfg;
    services.buildbarn.storage.settings = credentials.settings "bb-storage" cfg.credentials // {
      grpc_listen = mkDefault [ "[::]:${toString cfg.port}" ];
      http_listen = mkIf (cfg.httpPort != null) (mkDefault "[::]:${toString cfg.httpPort}");
      log = {
        format = mkDefault "text";
        level = mkDefault "info";
      };
      storage = storageDefaults "/var/lib/bb-storage";
    };

    users.users.bb-storage = {
      isSystemUser = true;
      group = "bb-storage";
      description = "Buildbarn storage";
    };
    users.groups.bb-storage = { };

    systemd.services.bb-storage = {
      description = "Buildbarn storage (bb-storage)";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      environment = credentials.environment "bb-storage" cfg.credentials;
      serviceConfig = {
        LoadCredential = credentials.loadCredential cfg.credentials;
        ExecStart = "${cfg.package}/bin/bb-storage --config ${toml.generate "bb-storage.toml" cfg.settings}";
        User = "bb-storage";
        Group = "bb-storage";
        StateDirectory = "bb-storage";
        StateDirectoryMode = "0700";
        WorkingDirectory = "/var/lib/bb-storage";
        Restart = "on-failure";
        LimitNOFILE = 65536;

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

    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.port
      ++ lib.optional (cfg.openFirewallMetrics && cfg.httpPort != null) cfg.httpPort;
  };
}
