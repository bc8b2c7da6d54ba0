# services.buildbarn.runner: the only process of the farm that runs foreign
# code, so the most restricted one: user bb-runner, no capabilities beyond
# what its settings need, no new privileges, a read-only system but for the
# worker's build directory. Each action gets namespaces of its own (no
# network unless allowNetwork is set) and a cgroup with the limits of
# `limits`, in the cgroup systemd delegates to the unit.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.buildbarn.runner;
  # The worker module is usually imported too; the runner also stands alone.
  workerBuildDirectory = config.services.buildbarn.worker.buildDirectory or "/var/lib/bb-worker/build";
  toml = pkgs.formats.toml { };
  inherit (lib) mkDefault mkEnableOption mkIf mkOption optionals types;
  # What the enabled options need, and nothing else.
  capabilities =
    (optionals cfg.chrootIntoInputRoot [ "CAP_SYS_CHROOT" ])
    ++ (optionals (cfg.runAs != null) [ "CAP_SETUID" "CAP_SETGID" ]);
in
{
  options.services.buildbarn.runner = {
    enable = mkEnableOption "bb-runner, which runs actions for the local bb-worker";

    package = mkOption {
      type = types.package;
      default = pkgs.bb-runner;
      defaultText = lib.literalExpression "pkgs.bb-runner";
      description = "The package providing bin/bb-runner.";
    };

    socket = mkOption {
      type = types.path;
      default = "/run/bb-runner/runner.sock";
      description = "The UNIX socket the worker connects to; shared by worker and runner only.";
    };

    buildDirectory = mkOption {
      type = types.path;
      default = workerBuildDirectory;
      defaultText = lib.literalExpression ''config.services.buildbarn.worker.buildDirectory or "/var/lib/bb-worker/build"'';
      description = "The worker's build directory: the only place the runner (and actions) may write.";
    };

    chrootIntoInputRoot = mkOption {
      type = types.bool;
      default = false;
      description = "chroot each action into its input root; gives the runner CAP_SYS_CHROOT.";
    };

    runAs = mkOption {
      type = types.nullOr (types.submodule {
        options = {
          uid = mkOption { type = types.ints.unsigned; description = "User ID actions run as."; };
          gid = mkOption { type = types.ints.unsigned; description = "Group ID actions run as."; };
        };
      });
      default = null;
      example = { uid = 2001; gid = 2001; };
      description = "Run actions as this user and group; gives the runner CAP_SETUID and CAP_SETGID.";
    };

    allowNetwork = mkOption {
      type = types.bool;
      default = false;
      description = "Let actions use the host's network. Otherwise each has a loopback interface of its own and nothing else.";
    };

    limits = {
      memory = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "4GiB";
        description = "Memory one action may use (swap off); past it the action is OOM-killed. null: unlimited.";
      };
      processes = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        example = 4096;
        description = "Processes and threads one action may have at once. null: unlimited.";
      };
      cpus = mkOption {
        type = types.nullOr types.float;
        default = null;
        example = 2.0;
        description = "CPU cores' worth of time one action may use. null: unlimited.";
      };
    };

    settings = mkOption {
      inherit (toml) type;
      default = { };
      description = ''
        bb-runner's configuration (TOML), merged over defaults that match the
        program's own (see `bb-runner --print-default-config`). Use the
        typed options above for chroot and run-as: they also grant the unit
        the capabilities these need.
      '';
    };
  };

  config = mkIf cfg.enable {
    services.buildbarn.runner.settings = {
      listen = mkDefault "unix:${cfg.socket}";
      build_directory = mkDefault cfg.buildDirectory;
      keep_capabilities = mkDefault capabilities;
      chroot_into_input_root = mkDefault cfg.chrootIntoInputRoot;
      run_as = mkIf (cfg.runAs != null) { inherit (cfg.runAs) uid gid; };
      # bb-runner is a dedicated user: whatever it runs after an action is
      # left over from the action.
      kill_user_processes = mkDefault true;
      readiness_paths = mkDefault [ ];
      sandbox = {
        allow_network = mkDefault cfg.allowNetwork;
        # Set it to refuse to start without every namespace and a cgroup
        # (the isolation VM test does); by default the runner says at start
        # what actions run without.
        require_isolation = mkDefault false;
        hidden_paths = mkDefault [ "/root" "/home" "/var/lib/bb-worker" "/var/lib/bb-scheduler" "/var/lib/bb-storage" ];
        limits = lib.filterAttrs (_: v: v != null) cfg.limits;
      };
      log = {
        format = mkDefault "text";
        level = mkDefault "info";
      };
    };

    users.users.bb-runner = {
      isSystemUser = true;
      group = "bb-runner";
      description = "Buildbarn runner (runs actions)";
    };
    users.groups.bb-runner = { };

    systemd.services.bb-runner = {
      description = "Buildbarn runner (bb-runner)";
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        ExecStart = "${cfg.package}/bin/bb-runner --config ${toml.generate "bb-runner.toml" cfg.settings}";
        User = "bb-runner";
        Group = "bb-runner";
        RuntimeDirectory = "bb-runner";
        RuntimeDirectoryMode = "0750";
        Restart = "always";
        RestartSec = "1s";
        # Everything the unit started goes when it stops.
        KillMode = "control-group";
        # The unit's cgroup is the runner's: it makes one per action there,
        # with the memory, pids and cpu controllers.
        Delegate = "memory pids cpu";

        # One space-separated value: NixOS writes a list as one line per
        # element, so an empty list would write no line at all and leave
        # systemd's full default bounding set. "" writes
        # `CapabilityBoundingSet=`, the empty set.
        CapabilityBoundingSet = lib.concatStringsSep " " capabilities;
        AmbientCapabilities = lib.concatStringsSep " " capabilities;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ReadWritePaths = [ cfg.buildDirectory ];
        PrivateTmp = true;
        ProtectHome = true;
        PrivateDevices = true;
        # Not ProtectKernelTunables or ProtectKernelLogs: their mounts over
        # /proc would keep the runner from mounting each action's own /proc
        # (the kernel refuses a procfs less covered than the one it sees).
        # Actions run as bb-runner, without capabilities: /proc/sys and
        # /proc/kmsg are not theirs to write or read.
        ProtectKernelModules = true;
        # Not ProtectControlGroups: the delegated cgroup must be writable.
        ProtectClock = true;
        # Not ProtectHostname: it filters sethostname(2), which sets each
        # action's fixed hostname in its own UTS namespace.
        # Network isolation is each action's network namespace; IPv4 is
        # needed for its loopback interface.
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        # Not RestrictNamespaces: systemd enforces it by refusing clone3(2)
        # altogether (seccomp cannot read clone3's arguments), and clone3 is
        # how the runner starts each action inside its cgroup; without it
        # the runner must move every action's process into its cgroup,
        # which stalls every fork and exit of the host for milliseconds.
        # The runner still works where clone3 is refused, only slower.
        RestrictNamespaces = false;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
      };
    };
  };
}
