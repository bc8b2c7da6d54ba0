# Evaluates nixos-modules/ with the real module system (nixpkgs' lib alone)
# and checks what the modules produce. Evaluates to true, or throws naming
# the first failed assertion.
#
#   nix-instantiate --eval --strict checks/module-eval.nix --arg lib 'import /path/to/nixpkgs/lib'
#
# With --arg vmScripts true it gives the VM tests' scripts and node names instead.
#
# NixOS itself is not needed: the few NixOS options the modules set are
# declared here, freeform, and `pkgs` is a small test stand-in.
{ lib
  # Instead of true: each VM test's Python script, by test, for checks/nix.sh
  # to compile.
, vmScripts ? false
}:
let
  inherit (lib) mkOption types;

  # Test stand-in: a store path that is never built.
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  # Test stand-in for the one piece of pkgs the modules use besides their
  # packages and the host platform: pkgs.formats.toml, with the same value
  # type nixpkgs declares.
  tomlStandIn = _: {
    type =
      let
        valueType = types.nullOr
          (types.oneOf [
            types.bool
            types.int
            types.float
            types.str
            types.path
            (types.attrsOf valueType)
            (types.listOf valueType)
          ]) // { description = "TOML value"; };
      in
      types.attrsOf valueType;
    generate = name: _value: "/nix/store/00000000000000000000000000000000-${name}";
  };

  pkgs = {
    formats.toml = tomlStandIn;
    stdenv.hostPlatform.parsed.cpu.name = "x86_64";
    bb-scheduler = fakePackage "bb-scheduler";
    bb-storage = fakePackage "bb-storage";
    bb-worker = fakePackage "bb-worker";
    bb-runner = fakePackage "bb-runner";
    # The example farm's toolchain.
    gcc = fakePackage "gcc";
    binutils = fakePackage "binutils";
    coreutils = fakePackage "coreutils";
    # The VM tests' toolchain and tools.
    hello = fakePackage "hello";
    curl = fakePackage "curl";
    jq = fakePackage "jq";
  };

  # The NixOS options the modules set, declared freeform.
  nixosOptions = {
    options = {
      users = mkOption { type = types.lazyAttrsOf types.anything; default = { }; };
      systemd = mkOption {
        # Freeform, but tmpfiles rules are a list, as in NixOS: definitions add up.
        type = types.submodule {
          freeformType = types.lazyAttrsOf types.anything;
          options.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
        };
        default = { };
      };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      networking.hostName = mkOption { type = types.str; default = "host1"; };
      assertions = mkOption { type = types.listOf types.anything; default = [ ]; };
      nixpkgs.overlays = mkOption { type = types.listOf types.anything; default = [ ]; };
    };
  };

  evaluateWith = roles: modules:
    (lib.evalModules {
      modules = [ nixosOptions roles { _module.args.pkgs = pkgs; } ] ++ modules;
    }).config;
  evaluate = evaluateWith ../nixos-modules;

  # Each module as flake.nix exports it, imported alone and enabled: its
  # units and settings evaluate fully.
  alone = roles: role:
    let config = evaluateWith { imports = roles; } [{ services.buildbarn.${role}.enable = true; }];
    in (builtins.tryEval (builtins.deepSeq [ config.systemd config.services.buildbarn.${role}.settings ] true)).success;

  scheduler = evaluate [{ services.buildbarn.scheduler = { enable = true; openFirewall = true; }; }];
  remote = evaluate [{ services.buildbarn.scheduler = { enable = true; remoteStorage = "grpc://storage:8981"; }; }];
  storage = evaluate [{ services.buildbarn.storage.enable = true; }];
  secure = evaluate [{
    services.buildbarn.scheduler = {
      enable = true;
      openFirewall = true;
      openFirewallStatusPage = true;
      credentials = {
        certificate = "/run/keys/cert.pem";
        privateKey = "/run/keys/key.pem";
        clientCa = "/run/keys/ca.pem";
        tokensFile = "/run/keys/tokens.toml";
      };
    };
  }];
  secureUnit = secure.systemd.services.bb-scheduler.serviceConfig;
  secureWorker = evaluate [{
    services.buildbarn.worker = {
      enable = true;
      schedulerEndpoint = "grpcs://scheduler:8983";
      storageEndpoint = "grpcs://scheduler:8980";
      credentials = { ca = "/run/keys/ca.pem"; certificate = "/run/keys/w.pem"; privateKey = "/run/keys/w-key.pem"; token = "/run/keys/token"; };
    };
  }];
  worker = evaluate [{
    services.buildbarn.worker = {
      enable = true;
      schedulerEndpoint = "grpc://scheduler:8983";
      storageEndpoint = "grpc://scheduler:8980";
    };
  }];
  isolated = evaluate [{ services.buildbarn.runner = { enable = true; settings.sandbox.require_isolation = true; }; }];
  limited = evaluate [{ services.buildbarn.runner = { enable = true; limits = { memory = "1GiB"; processes = 512; }; }; }];
  networked = evaluate [{
    services.buildbarn.worker.enable = true;
    services.buildbarn.runner.allowNetwork = true;
  }];
  chrooted = evaluate [{
    services.buildbarn.worker.enable = true;
    services.buildbarn.runner.chrootIntoInputRoot = true;
  }];

  runAs = evaluate [{
    services.buildbarn.worker.enable = true;
    services.buildbarn.runner.runAs = { uid = 2001; gid = 2001; };
  }];

  # The farm function over the example description, and variations of it.
  mkFarm = import ../nixos-modules/farm.nix { inherit lib; };
  example = import ../nixos-modules/example-farm.nix;
  hosts = description: lib.mapAttrs (_: host: evaluate [ host ]) (mkFarm description);
  farm = hosts example;
  grown = hosts (lib.recursiveUpdate example { workers.worker3 = { concurrency = 4; }; });
  sharded = hosts (builtins.removeAttrs example [ "tokens" ] // {
    storage.nodes = { storage1 = { }; storage2 = { }; };
    anonymousOnNetwork = true;
  });
  tls = { ca = "/run/keys/bb-ca.pem"; directory = "/run/keys"; };
  securedNodes = hosts (lib.recursiveUpdate example {
    inherit tls;
    storage = { nodes.storage1 = { }; copies = 1; };
    tokens.scheduler = "/run/keys/bb-scheduler-token";
  });
  certified = hosts (lib.recursiveUpdate (builtins.removeAttrs example [ "tokens" ]) {
    tls = tls // { workerCertificates = true; };
  });
  # What the VM tests deploy.
  vmFarms = import ./vm/farms.nix { inherit lib; };
  vmHosts = description: extra: lib.mapAttrs
    (name: host: evaluate ([ host ] ++ lib.optional (description.workers ? ${name}) extra))
    (mkFarm description);
  isolationHosts = vmHosts vmFarms.closed vmFarms.isolationWorker;
  # Each VM test as its file writes it, with runNixOSTest handing back its
  # argument: every node evaluates, passes its assertions, and the script
  # is a string.
  vmTest = file: import file {
    pkgs = pkgs // {
      inherit lib;
      testers.runNixOSTest = test: test;
      runCommand = name: _: _: fakePackage name;
      openssl = fakePackage "openssl";
    };
    module = ../nixos-modules;
    packages = lib.genAttrs [ "bb-scheduler" "bb-storage" "bb-worker" "bb-runner" "bb" ] fakePackage;
  };
  # The NixOS options the tests' nodes set beyond the modules', freeform.
  vmOptions.options = {
    virtualisation = mkOption { type = types.lazyAttrsOf types.anything; default = { }; };
    environment = mkOption { type = types.lazyAttrsOf types.anything; default = { }; };
  };
  vmTestHolds = file:
    let
      test = vmTest file;
      node = module: evaluateWith ../nixos-modules [ vmOptions module ];
      holds = config:
        let
          evaluated = builtins.tryEval (builtins.deepSeq [ config.services.buildbarn config.systemd config.networking ]
            (lib.all (a: a.assertion) config.assertions));
        in
        evaluated.success && evaluated.value;
    in
    lib.all (module: holds (node module)) (lib.attrValues test.nodes) && builtins.isString test.testScript;
  secureHosts = vmHosts vmFarms.secure { };
  # The flake's lib.mkFarm, which adds the farm's modules and packages.
  flake = (import ../flake.nix).outputs { self = flake; nixpkgs = { inherit lib; }; crane = { }; rust-overlay = { }; };
  flakeHosts = lib.mapAttrs (_: host: evaluate [ host ]) (flake.lib.mkFarm example);
  # What a host is, as far as the farm's wiring goes.
  wiring = host: builtins.toJSON {
    inherit (host.services.buildbarn) scheduler storage worker;
    firewall = host.networking.firewall.allowedTCPPorts;
    hostName = host.networking.hostName;
  };
  workerSettings = host: host.services.buildbarn.worker.settings;

  runnerUnit = worker.systemd.services.bb-runner.serviceConfig;
  workerUnit = worker.systemd.services.bb-worker;
  schedulerUnit = scheduler.systemd.services.bb-scheduler.serviceConfig;
  fails = config: !(builtins.tryEval (builtins.deepSeq config true)).success;

  checks = [
    # Users: one per role, the worker also in the runner's group for the socket.
    { name = "scheduler user"; ok = scheduler.users.users.bb-scheduler.isSystemUser; }
    { name = "storage user"; ok = storage.users.users.bb-storage.isSystemUser; }
    { name = "worker user"; ok = worker.users.users.bb-worker.isSystemUser; }
    { name = "runner user, enabled with the worker"; ok = worker.users.users.bb-runner.isSystemUser; }
    { name = "worker shares the runner's socket group"; ok = worker.users.users.bb-worker.extraGroups == [ "bb-runner" ]; }
    { name = "no worker users without a worker"; ok = !(scheduler.users.users ? bb-worker); }

    # ExecStart with the rendered config, and what the config says.
    {
      name = "scheduler ExecStart";
      ok = schedulerUnit.ExecStart
        == "/nix/store/00000000000000000000000000000000-bb-scheduler/bin/bb-scheduler --config /nix/store/00000000000000000000000000000000-bb-scheduler.toml";
    }
    { name = "a scheduler on the network without authentication fails an assertion"; ok = !(lib.all (a: a.assertion) scheduler.assertions); }
    { name = "a scheduler with tokens passes it"; ok = lib.all (a: a.assertion) (evaluate [{ services.buildbarn.scheduler = { enable = true; settings.authentication.tokens_file = "/run/credentials/bb-scheduler.service/tokens.toml"; }; }]).assertions; }
    { name = "a closed network may be declared"; ok = lib.all (a: a.assertion) (evaluate [{ services.buildbarn.storage = { enable = true; settings.authentication.anonymous_on_network = true; }; }]).assertions; }
    { name = "scheduler listens on the standard ports"; ok = scheduler.services.buildbarn.scheduler.settings.client_listen == [ "[::]:8980" ] && scheduler.services.buildbarn.scheduler.settings.worker_listen == [ "[::]:8983" ]; }
    { name = "scheduler embeds storage under its state"; ok = scheduler.services.buildbarn.scheduler.settings.storage.cas.path == "/var/lib/bb-scheduler/cas"; }
    { name = "scheduler defaults match the program's"; ok = scheduler.services.buildbarn.scheduler.settings.scheduler.max_attempts == 3 && scheduler.services.buildbarn.scheduler.settings.scheduler.client_disconnect_grace == "60s"; }
    { name = "remote storage replaces embedded storage"; ok = remote.services.buildbarn.scheduler.settings.remote_storage.endpoint == "grpc://storage:8981" && !(remote.services.buildbarn.scheduler.settings ? storage); }
    { name = "storage ExecStart"; ok = lib.hasSuffix "bb-storage.toml" storage.systemd.services.bb-storage.serviceConfig.ExecStart; }
    { name = "worker endpoints"; ok = worker.services.buildbarn.worker.settings.scheduler == "grpc://scheduler:8983" && worker.services.buildbarn.worker.settings.storage == "grpc://scheduler:8980"; }
    { name = "worker talks to the runner's socket"; ok = worker.services.buildbarn.worker.settings.runner == "unix:/run/bb-runner/runner.sock" && worker.services.buildbarn.runner.settings.listen == "unix:/run/bb-runner/runner.sock"; }
    { name = "worker name is the host name"; ok = worker.services.buildbarn.worker.settings.name == "host1"; }
    { name = "worker offers OSFamily and BuildStream's ISA"; ok = worker.services.buildbarn.worker.settings.platform == [{ name = "OSFamily"; value = "linux"; } { name = "ISA"; value = "x86-64"; }]; }
    { name = "runner and worker share the build directory"; ok = worker.services.buildbarn.runner.settings.build_directory == worker.services.buildbarn.worker.settings.build_directory; }

    # The runner: least privilege, spelled out.
    # The value systemd gets: "" is written as `CapabilityBoundingSet=`, the
    # empty set (an empty list would be written as nothing: a full set).
    { name = "runner bounding set empty"; ok = runnerUnit.CapabilityBoundingSet == ""; }
    { name = "runner ambient set empty"; ok = runnerUnit.AmbientCapabilities == ""; }
    { name = "runner keeps no capability"; ok = worker.services.buildbarn.runner.settings.keep_capabilities == [ ]; }
    { name = "runner no new privileges"; ok = runnerUnit.NoNewPrivileges; }
    { name = "runner read-only system"; ok = runnerUnit.ProtectSystem == "strict"; }
    { name = "runner writes only the build directory"; ok = runnerUnit.ReadWritePaths == [ "/var/lib/bb-worker/build" ]; }
    { name = "runner private /tmp, no /home"; ok = runnerUnit.PrivateTmp && runnerUnit.ProtectHome; }
    # Actions get their network from their namespace: none by default.
    { name = "actions without network"; ok = !worker.services.buildbarn.runner.settings.sandbox.allow_network; }
    { name = "actions with network when allowed"; ok = networked.services.buildbarn.runner.settings.sandbox.allow_network; }
    { name = "runner gets its cgroup delegated"; ok = runnerUnit.Delegate == "memory pids cpu" && !(runnerUnit ? ProtectControlGroups); }
    { name = "runner may use clone3 (RestrictNamespaces would refuse it)"; ok = runnerUnit.RestrictNamespaces == false; }
    { name = "runner may set actions' hostname"; ok = !(runnerUnit ? ProtectHostname); }
    { name = "runner may be told to refuse to run actions unisolated"; ok = !worker.services.buildbarn.runner.settings.sandbox.require_isolation && isolated.services.buildbarn.runner.settings.sandbox.require_isolation; }
    { name = "limits reach the runner's settings"; ok = limited.services.buildbarn.runner.settings.sandbox.limits == { memory = "1GiB"; processes = 512; }; }
    { name = "no limits by default"; ok = worker.services.buildbarn.runner.settings.sandbox.limits == { }; }
    { name = "runner runs as bb-runner"; ok = runnerUnit.User == "bb-runner"; }
    { name = "chroot adds exactly CAP_SYS_CHROOT"; ok = chrooted.systemd.services.bb-runner.serviceConfig.CapabilityBoundingSet == "CAP_SYS_CHROOT" && chrooted.services.buildbarn.runner.settings.keep_capabilities == [ "CAP_SYS_CHROOT" ] && chrooted.services.buildbarn.runner.settings.chroot_into_input_root; }
    { name = "run-as adds exactly CAP_SETUID and CAP_SETGID"; ok = runAs.systemd.services.bb-runner.serviceConfig.AmbientCapabilities == "CAP_SETUID CAP_SETGID" && runAs.services.buildbarn.runner.settings.run_as == { uid = 2001; gid = 2001; }; }
    { name = "runner kills leftovers of its user"; ok = worker.services.buildbarn.runner.settings.kill_user_processes; }

    # The worker: after the runner, restarted with it, no capabilities.
    { name = "worker waits for the runner"; ok = builtins.elem "bb-runner.service" workerUnit.after && builtins.elem "bb-runner.service" workerUnit.requires; }
    { name = "worker holds no capability"; ok = workerUnit.serviceConfig.CapabilityBoundingSet == "" && workerUnit.serviceConfig.NoNewPrivileges; }
    { name = "file cache private to bb-worker"; ok = builtins.elem "d /var/lib/bb-worker/cache 0700 bb-worker bb-worker -" worker.systemd.tmpfiles.rules; }
    { name = "scheduler holds no capability"; ok = schedulerUnit.CapabilityBoundingSet == "" && schedulerUnit.NoNewPrivileges; }

    # The farm function: hosts derived from one description.
    { name = "the example farm is a scheduler and two workers"; ok = lib.attrNames farm == [ "scheduler" "worker1" "worker2" ]; }
    {
      name = "workers reach the scheduler's worker and client ports";
      ok = lib.all
        (w: (workerSettings w).scheduler == "grpc://scheduler:8983" && (workerSettings w).storage == "grpc://scheduler:8980")
        [ farm.worker1 farm.worker2 ];
    }
    {
      name = "the flake's mkFarm gives each host the farm's modules and overlay";
      ok = lib.all (h: wiring flakeHosts.${h} == wiring farm.${h} && builtins.length flakeHosts.${h}.nixpkgs.overlays == 1)
        [ "scheduler" "worker1" "worker2" ];
    }
    { name = "the flake defines the example farm's hosts and a client"; ok = lib.attrNames flake.nixosConfigurations == [ "client" "scheduler" "worker1" "worker2" ]; }
    { name = "two workers, two names"; ok = (workerSettings farm.worker1).name == "worker1" && (workerSettings farm.worker2).name == "worker2"; }
    { name = "the scheduler opens its client and worker ports, not the status page"; ok = farm.scheduler.networking.firewall.allowedTCPPorts == [ 8980 8983 ]; }
    { name = "workers open nothing"; ok = farm.worker1.networking.firewall.allowedTCPPorts == [ ]; }
    { name = "workers run what the description says"; ok = (workerSettings farm.worker1).concurrency == 2; }
    {
      name = "tokens: the scheduler checks them, workers present theirs";
      ok = farm.scheduler.systemd.services.bb-scheduler.serviceConfig.LoadCredential == [ "tokensFile:/run/keys/bb-tokens.toml" ]
        && farm.worker1.systemd.services.bb-worker.serviceConfig.LoadCredential == [ "token:/run/keys/bb-worker-token" ]
        && lib.all (a: a.assertion) farm.scheduler.assertions
        && farm.scheduler.services.buildbarn.scheduler.settings.authentication.policy
        == [{ identities = [ "worker" ]; permissions = [ "worker" ]; } { identities = [ "ci" ]; permissions = [ "execute" "read" "write-cas" ]; }];
    }
    {
      name = "a third worker adds one host and changes no other";
      ok = lib.attrNames grown == [ "scheduler" "worker1" "worker2" "worker3" ]
        && lib.all (h: wiring grown.${h} == wiring farm.${h}) [ "scheduler" "worker1" "worker2" ]
        && (workerSettings grown.worker3).name == "worker3";
    }
    {
      name = "storage nodes: the scheduler shards over them, and only they open the storage port";
      ok = let cas = sharded.scheduler.services.buildbarn.scheduler.settings.storage.cas; in
        cas.backend == "sharding" && !(cas ? path) && cas.copies == 2
          && map (s: s.store.endpoint) cas.shards == [ "grpc://storage1:8981" "grpc://storage2:8981" ]
          && sharded.storage1.networking.firewall.allowedTCPPorts == [ 8981 ]
          && !sharded.storage1.services.buildbarn.storage.settings.storage.action_cache.completeness_check
          && sharded.scheduler.networking.firewall.allowedTCPPorts == [ 8980 8983 ];
    }
    { name = "storage nodes with tokens need the scheduler's token"; ok = fails (hosts (example // { storage.nodes.storage1 = { }; })); }
    {
      name = "secured storage nodes: the scheduler presents its CA and token to each, they let it alone in";
      ok =
        let
          schedulerSettings = securedNodes.scheduler.services.buildbarn.scheduler.settings;
          node = securedNodes.storage1.services.buildbarn.storage;
          copy = name: "/run/credentials/bb-scheduler.service/${name}";
          leaf = { backend = "grpc"; endpoint = "grpcs://storage1:8981"; tls.ca = copy "storageCa"; token_file = copy "storageToken"; };
        in
        map (s: s.store) schedulerSettings.storage.cas.shards == [ leaf ]
          && map (s: s.store) schedulerSettings.storage.action_cache.store.shards == [ leaf ]
          && builtins.elem "storageCa:/run/keys/bb-ca.pem" securedNodes.scheduler.systemd.services.bb-scheduler.serviceConfig.LoadCredential
          && builtins.elem "storageToken:/run/keys/bb-scheduler-token" securedNodes.scheduler.systemd.services.bb-scheduler.serviceConfig.LoadCredential
          && node.credentials.certificate == "/run/keys/storage1.pem" && node.credentials.tokensFile == "/run/keys/bb-tokens.toml"
          && node.settings.authentication.policy == [{ identities = [ "scheduler" ]; permissions = [ "read" "write-cas" "write-action-cache" ]; }]
          && lib.all (a: a.assertion) (securedNodes.storage1.assertions ++ securedNodes.scheduler.assertions);
    }
    {
      name = "worker certificates: each worker presents its own, the worker port takes only those";
      ok =
        let auth = certified.scheduler.services.buildbarn.scheduler.settings.authentication; in
        certified.worker1.services.buildbarn.worker.credentials.certificate == "/run/keys/worker1.pem"
          && certified.worker2.services.buildbarn.worker.credentials.privateKey == "/run/keys/worker2.key"
          && certified.worker1.services.buildbarn.worker.credentials.token == null
          && certified.scheduler.services.buildbarn.scheduler.credentials.clientCa == "/run/keys/bb-ca.pem"
          && auth.listeners.worker == [ "certificate" ]
          && lib.all (a: a.assertion) certified.scheduler.assertions
          && builtins.head auth.policy == { identities = [ "worker1" "worker2" ]; permissions = [ "worker" ]; };
    }
    {
      name = "a remote storage endpoint gets the scheduler's storage credentials";
      ok = (evaluate [{
        services.buildbarn.scheduler = {
          enable = true;
          remoteStorage = "grpcs://storage:8981";
          credentials = { storageCa = "/run/keys/ca.pem"; storageToken = "/run/keys/token"; };
        };
      }]).services.buildbarn.scheduler.settings.remote_storage
      == { endpoint = "grpcs://storage:8981"; tls.ca = "/run/credentials/bb-scheduler.service/storageCa"; token_file = "/run/credentials/bb-scheduler.service/storageToken"; };
    }
    {
      name = "a worker's toolchain is the PATH of actions that set none";
      ok =
        let
          path = host: (host.services.buildbarn.runner.settings.default_environment or { }).PATH or null;
          store = name: "/nix/store/00000000000000000000000000000000-${name}/bin";
          withTools = hosts (lib.recursiveUpdate example { workers.worker1.toolchain = _: [ (fakePackage "make") ]; });
          without = hosts (lib.recursiveUpdate example { workers.worker1.toolchain = _: [ ]; });
        in
        path farm.worker1 == lib.concatMapStringsSep ":" store [ "gcc" "binutils" "coreutils" ]
          && path withTools.worker1 == store "make"
          && path without.worker1 == null
          && wiring withTools.worker2 == wiring farm.worker2;
    }
    {
      name = "extra platform properties follow OSFamily and ISA";
      ok = (workerSettings (hosts (lib.recursiveUpdate example { workers.worker1.platform = { gpu = "none"; }; })).worker1).platform
        == [{ name = "OSFamily"; value = "linux"; } { name = "ISA"; value = "x86-64"; } { name = "gpu"; value = "none"; }];
    }

    {
      name = "the VM tests' hosts pass their assertions";
      ok = lib.all (host: lib.all (a: a.assertion) host.assertions && !(fails host.services.buildbarn))
        (lib.attrValues isolationHosts ++ lib.attrValues secureHosts);
    }
  ] ++ map
    (test: { name = "the ${test} VM test's nodes evaluate and pass their assertions"; ok = vmTestHolds ./vm/${test}.nix; })
    vmTestNames
  ++ [
    {
      name = "the isolation test's workers: limits, isolation required, metrics on the loopback";
      ok = isolationHosts.worker2.services.buildbarn.runner.settings.sandbox.limits == { memory = "128MiB"; processes = 512; }
        && isolationHosts.worker1.services.buildbarn.runner.settings.sandbox.require_isolation
        && isolationHosts.worker1.services.buildbarn.worker.settings.http_listen == "[::]:7984"
        && !(isolationHosts.scheduler.services.buildbarn.runner.enable or false);
    }
    {
      name = "the secure-farm test's hosts: four, each loading its own certificate";
      ok = lib.attrNames secureHosts == [ "scheduler" "storage1" "worker1" "worker2" ]
        && builtins.elem "certificate:/run/keys/worker2.pem" secureHosts.worker2.systemd.services.bb-worker.serviceConfig.LoadCredential
        && builtins.elem "certificate:/run/keys/storage1.pem" secureHosts.storage1.systemd.services.bb-storage.serviceConfig.LoadCredential;
    }

    # Every exported module stands alone.
    { name = "scheduler module alone"; ok = alone [ ../nixos-modules/scheduler.nix ] "scheduler"; }
    { name = "storage module alone"; ok = alone [ ../nixos-modules/storage.nix ] "storage"; }
    { name = "worker module (with its runner) alone"; ok = alone [ ../nixos-modules/worker.nix ../nixos-modules/runner.nix ] "worker"; }
    { name = "runner module alone"; ok = alone [ ../nixos-modules/runner.nix ] "runner"; }
    { name = "runner alone uses the worker's default build directory"; ok = (evaluateWith ../nixos-modules/runner.nix [{ services.buildbarn.runner.enable = true; }]).services.buildbarn.runner.settings.build_directory == "/var/lib/bb-worker/build"; }

    # Firewall.
    { name = "openFirewall opens the client and worker ports, not the status page"; ok = scheduler.networking.firewall.allowedTCPPorts == [ 8980 8983 ]; }
    { name = "the status page opens on its own request"; ok = secure.networking.firewall.allowedTCPPorts == [ 8980 8983 7982 ]; }
    { name = "no status page, no HTTP listener"; ok = !((evaluate [{ services.buildbarn.scheduler = { enable = true; httpPort = null; }; }]).services.buildbarn.scheduler.settings ? http_listen); }
    { name = "credentials are loaded by systemd, never from the store"; ok = secureUnit.LoadCredential == [ "certificate:/run/keys/cert.pem" "clientCa:/run/keys/ca.pem" "privateKey:/run/keys/key.pem" "tokensFile:/run/keys/tokens.toml" ]; }
    { name = "the program reads the credentials' copies"; ok = secure.services.buildbarn.scheduler.settings.tls == { certificate = "/run/credentials/bb-scheduler.service/certificate"; private_key = "/run/credentials/bb-scheduler.service/privateKey"; } && secure.services.buildbarn.scheduler.settings.authentication.client_ca == "/run/credentials/bb-scheduler.service/clientCa"; }
    { name = "a secure scheduler passes the network assertion"; ok = lib.all (a: a.assertion) secure.assertions; }
    { name = "a certificate without its key fails an assertion"; ok = !(lib.all (a: a.assertion) (evaluate [{ services.buildbarn.scheduler = { enable = true; credentials.certificate = "/run/keys/cert.pem"; settings.authentication.anonymous_on_network = true; }; }]).assertions); }
    {
      name = "bucket keys reach object storage through systemd's copy";
      ok =
        let
          bucket = (evaluate [{ services.buildbarn.storage = { enable = true; credentials.bucketCredentials = "/run/keys/s3"; }; }]).systemd.services.bb-storage;
        in
        bucket.serviceConfig.LoadCredential == [ "bucketCredentials:/run/keys/s3" ]
          && bucket.environment.AWS_SHARED_CREDENTIALS_FILE == "/run/credentials/bb-storage.service/bucketCredentials"
          && storage.systemd.services.bb-storage.environment == { };
    }
    { name = "a credential must be an absolute path string"; ok = fails (evaluate [{ services.buildbarn.scheduler = { enable = true; credentials.tokensFile = "tokens.toml"; }; }]).services.buildbarn.scheduler.credentials.tokensFile; }
    { name = "a worker presents its certificate and token from credentials"; ok = secureWorker.services.buildbarn.worker.settings.tls == { ca = "/run/credentials/bb-worker.service/ca"; certificate = "/run/credentials/bb-worker.service/certificate"; private_key = "/run/credentials/bb-worker.service/privateKey"; } && secureWorker.services.buildbarn.worker.settings.token_file == "/run/credentials/bb-worker.service/token" && builtins.length secureWorker.systemd.services.bb-worker.serviceConfig.LoadCredential == 4; }
    { name = "nothing opened by default"; ok = worker.networking.firewall.allowedTCPPorts == [ ] && remote.networking.firewall.allowedTCPPorts == [ ]; }

    # Wrong types are rejected.
    { name = "a port must be a number"; ok = fails (evaluate [{ services.buildbarn.scheduler = { enable = true; clientPort = "eighty"; }; }]).services.buildbarn.scheduler.clientPort; }
    { name = "allowNetwork must be a boolean"; ok = fails (evaluate [{ services.buildbarn.runner = { enable = true; allowNetwork = "yes"; }; }]).services.buildbarn.runner.allowNetwork; }
    { name = "settings must be TOML values"; ok = fails (evaluate [{ services.buildbarn.storage = { enable = true; settings.log.level = x: x; }; }]).services.buildbarn.storage.settings; }
  ];

  failed = builtins.filter (check: !check.ok) checks;
  vmTestNames = [ "farm" "isolation" "worker-loss" "secure-farm" "example-farm" ];
in
if vmScripts then lib.genAttrs vmTestNames (test: let t = vmTest ./vm/${test}.nix; in { script = t.testScript; nodes = lib.attrNames t.nodes; }) else
if failed == [ ] then true else throw "module-eval: failed: ${lib.concatMapStringsSep ", " (check: check.name) failed}"
