# services.buildbarn.worker: takes actions from a scheduler and has the
# local runner (services.buildbarn.runner, enabled with it) run them.
#
# Layout under /var/lib/bb-worker (mode 0711, user bb-worker):
#   build/  per-action directories; the runner may write there
#   cache/  the file cache, 0700: inputs are hardlinked from it, read-only
#           and owned by bb-worker, so actions (user bb-runner) cannot
#           change them or even list the cache.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.buildbarn.worker;
  runner = config.services.buildbarn.runner;
  toml = pkgs.formats.toml { };
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
  credentials = import ./credentials.nix { inherit lib; };
  credentialPath = credentials.path "bb-worker";
  # This host's instruction set as BuildStream names it (its ISA property).
  cpu = pkgs.stdenv.hostPlatform.parsed.cpu.name;
  isa = { x86_64 = "x86-64"; i686 = "x86-32"; aarch64 = "aarch64"; armv7l = "aarch32"; }.${cpu} or cpu;
in
{
  options.services.buildbarn.worker = {
    enable = mkEnableOption "bb-worker, which runs actions for a bb-scheduler (enables the runner too)";

    package = mkOption {
      type = types.package;
      default = pkgs.bb-worker;
      defaultText = lib.literalExpression "pkgs.bb-worker";
      description = "The package providing bin/bb-worker.";
    };

    schedulerEndpoint = mkOption {
      type = types.str;
      default = "grpc://127.0.0.1:8983";
      example = "grpc://scheduler.example.org:8983";
      description = "The scheduler's worker API.";
    };

    storageEndpoint = mkOption {
      type = types.str;
      default = "grpc://127.0.0.1:8980";
      example = "grpc://scheduler.example.org:8980";
      description = "The CAS and Action Cache: the scheduler's client port when it embeds storage, or a bb-storage.";
    };

    platformProperties = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { container-image = "docker://ubuntu:24.04"; };
      description = ''
        Platform properties the worker offers besides OSFamily=linux and its
        ISA; an action is given to it only if it offers all the action asks for.
      '';
    };

    toolchain = mkOption {
      type = types.listOf types.package;
      default = [ ];
      example = lib.literalExpression "[ pkgs.gcc pkgs.binutils pkgs.coreutils pkgs.bash ]";
      description = ''
        Packages actions may use: their bin/ directories become the PATH of
        every action that sets none (Bazel sends none unless told to), and
        where the runner looks up an action's program.
      '';
    };

    buildDirectory = mkOption {
      type = types.path;
      default = "/var/lib/bb-worker/build";
      description = "Where per-action directories are made; on the same file system as cacheDirectory.";
    };

    cacheDirectory = mkOption {
      type = types.path;
      default = "/var/lib/bb-worker/cache";
      description = "The file cache, private to the bb-worker user.";
    };

    metricsPort = mkOption {
      type = types.nullOr types.port;
      default = null;
      example = 7984;
      description = "Port of Prometheus /metrics; null serves none.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the metrics port in the firewall (the worker only connects out otherwise).";
    };

    credentials = credentials.options {
      ca = "The CA (PEM) the scheduler's and storage's certificates must chain to, for grpcs:// endpoints.";
      certificate = "The worker's client certificate (PEM), for mutual TLS.";
      privateKey = "The client certificate's private key (PEM).";
      token = "A file holding the bearer token the worker presents.";
    };

    settings = mkOption {
      inherit (toml) type;
      default = { };
      description = ''
        bb-worker's configuration (TOML), merged over defaults that match the
        program's own (see `bb-worker --print-default-config`): one slot per
        CPU core, the host name as worker name, platform OSFamily=linux and
        the host's ISA as BuildStream spells it (x86-64, aarch64), so both
        Bazel's and BuildStream's actions match.
      '';
    };
  };

  config = mkIf cfg.enable {
    services.buildbarn.runner.enable = mkDefault true;
    services.buildbarn.runner.settings.default_environment.PATH =
      mkIf (cfg.toolchain != [ ]) (mkDefault (lib.makeBinPath cfg.toolchain));

    assertions = [
      {
        assertion = (cfg.credentials.certificate == null) == (cfg.credentials.privateKey == null);
        message = "services.buildbarn.worker.credentials: certificate and privateKey go together.";
      }
      {
        assertion = cfg.credentials.certificate == null || cfg.credentials.ca != null;
        message = "services.buildbarn.worker.credentials: a client certificate is presented over TLS: set ca too.";
      }
      {
        assertion = cfg.metricsPort == null || import ./authentication.nix { inherit lib; } cfg.settings;
        message = ''
          services.buildbarn.worker.metricsPort serves metrics to the network without authentication:
          set settings.authentication, or settings.authentication.anonymous_on_network = true.
        '';
      }
    ];

    services.buildbarn.worker.settings = {
      tls = mkIf (cfg.credentials.ca != null) ({ ca = credentialPath "ca"; }
        // lib.optionalAttrs (cfg.credentials.certificate != null) {
        certificate = credentialPath "certificate";
        private_key = credentialPath "privateKey";
      });
      token_file = mkIf (cfg.credentials.token != null) (credentialPath "token");
      scheduler = mkDefault cfg.schedulerEndpoint;
      storage = mkDefault cfg.storageEndpoint;
      runner = mkDefault "unix:${runner.socket}";
      build_directory = mkDefault cfg.buildDirectory;
      cache_directory = mkDefault cfg.cacheDirectory;
      cache_max_size = mkDefault "10GiB";
      cache_max_files = mkDefault 1000000;
      max_parallel_downloads = mkDefault 16;
      concurrency = mkDefault 0;
      name = mkDefault config.networking.hostName;
      instance_name_prefix = mkDefault "";
      platform = mkDefault ([{ name = "OSFamily"; value = "linux"; } { name = "ISA"; value = isa; }]
        ++ lib.mapAttrsToList (name: value: { inherit name value; }) cfg.platformProperties);
      shutdown_grace = mkDefault "60s";
      http_listen = mkIf (cfg.metricsPort != null) (mkDefault "[::]:${toString cfg.metricsPort}");
      log = {
        format = mkDefault "text";
        level = mkDefault "info";
      };
    };

    users.users.bb-worker = {
      isSystemUser = true;
      group = "bb-worker";
      # For the runner's socket, which only the two of them share.
      extraGroups = [ "bb-runner" ];
      description = "Buildbarn worker";
    };
    users.groups.bb-worker = { };

    # Made before either service starts: the runner's unit can only make
    # the build directory writable if it exists.
    systemd.tmpfiles.rules = [
      "d /var/lib/bb-worker 0711 bb-worker bb-worker -"
      "d ${cfg.buildDirectory} 0711 bb-worker bb-worker -"
      "d ${cfg.cacheDirectory} 0700 bb-worker bb-worker -"
    ];

    systemd.services.bb-worker = {
      description = "Buildbarn worker (bb-worker)";
      wantedBy = [ "multi-user.target" ];
      # Waits for the runner's socket; restarts with the runner.
      requires = [ "bb-runner.service" ];
      after = [ "network-online.target" "bb-runner.service" ];
      wants = [ "network-online.target" ];
      serviceConfig = {
        LoadCredential = credentials.loadCredential cfg.credentials;
        ExecStart = "${cfg.package}/bin/bb-worker --config ${toml.generate "bb-worker.toml" cfg.settings}";
        User = "bb-worker";
        Group = "bb-worker";
        StateDirectory = "bb-worker";
        # The runner passes through to build/; nobody lists anything.
        StateDirectoryMode = "0711";
        WorkingDirectory = "/var/lib/bb-worker";
        Restart = "always";
        RestartSec = "2s";
        # Running actions may finish (shutdown_grace) before hand-back.
        TimeoutStopSec = "90s";
        LimitNOFILE = 1048576;

        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ReadWritePaths = [ cfg.buildDirectory cfg.cacheDirectory ];
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" ];
      };
    };

    networking.firewall.allowedTCPPorts = mkIf (cfg.openFirewall && cfg.metricsPort != null) [ cfg.metricsPort ];
  };
}
