{
  description = "A remote-execution build farm (REv2) in Rust: bb-scheduler, bb-worker, bb-runner, bb-storage, and NixOS modules";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    # v0.21.3 is the last crane release that supports nixos-25.05 (0.22
    # dropped it and needs Nix 2.31.2); it needs Nix 2.28.3 or later.
    crane.url = "github:ipetkov/crane/v0.21.3";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, crane, rust-overlay }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f (import nixpkgs {
        inherit system;
        overlays = [ rust-overlay.overlays.default ];
      }));

      programs = [ "bb-scheduler" "bb-worker" "bb-runner" "bb-storage" "bb" ];

      # One build of the whole workspace: dependencies first (cached on their
      # own), then every binary.
      build = pkgs:
        let
          # The same toolchain as rust-toolchain.toml.
          craneLib = (crane.mkLib pkgs).overrideToolchain (p: p.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml);
          src = lib.cleanSourceWith {
            src = ./.;
            # Cargo sources, plus the .proto files that build.rs compiles.
            filter = path: type: (lib.hasSuffix ".proto" path) || (craneLib.filterCargoSources path type);
            name = "source";
          };
          common = {
            inherit src;
            pname = "bb-rs";
            version = "0.1.0";
            strictDeps = true;
          };
          cargoArtifacts = craneLib.buildDepsOnly common;
          workspace = craneLib.buildPackage (common // {
            inherit cargoArtifacts;
            # The tests run in checks.tests, with nextest.
            doCheck = false;
          });
          # One package per program, sharing the workspace build.
          program = name: pkgs.runCommand name { meta.mainProgram = name; } ''
            mkdir -p $out/bin
            ln -s ${workspace}/bin/${name} $out/bin/${name}
          '';
        in
        {
          inherit craneLib common cargoArtifacts workspace;
          packages = lib.genAttrs programs program // { default = workspace; };
        };
    in
    {
      packages = forAllSystems (pkgs: (build pkgs).packages);

      # The programs under their own names, for the NixOS modules' defaults.
      overlays.default = _final: prev: lib.removeAttrs self.packages.${prev.stdenv.hostPlatform.system} [ "default" ];

      apps = forAllSystems (pkgs:
        let
          packages = self.packages.${pkgs.stdenv.hostPlatform.system};
          app = name: program: { type = "app"; program = "${packages.${name}}/bin/${program}"; };
        in
        lib.genAttrs [ "bb-scheduler" "bb-worker" "bb-runner" "bb-storage" ] (name: app name name) // {
          bb = app "bb" "bb";
          # A whole farm on this machine: `nix run .#farm`.
          farm = {
            type = "app";
            program = "${pkgs.writeShellScript "bb-farm" ''exec ${packages.bb}/bin/bb farm "$@"''}";
          };
          # The example farm's hosts as VMs on this machine, with their
          # network (KVM needed): the NixOS test driver's shell, where
          # `start_all()` boots them and `client.shell_interact()` is a
          # shell on the client; `test_script()` runs the example's test.
          example-farm = {
            type = "app";
            program = "${pkgs.writeShellScript "bb-example-farm" ''
              exec ${self.checks.${pkgs.stdenv.hostPlatform.system}.vm-example-farm.driverInteractive}/bin/nixos-test-driver --interactive "$@"
            ''}";
          };
          default = app "bb" "bb";
        });

      # A whole farm described once (see nixos-modules/farm.nix for the
      # description): one NixOS module per host, each with the farm's
      # modules and packages; add the host's hardware configuration.
      lib.mkFarm = description: lib.mapAttrs
        (_: host: { imports = [ host self.nixosModules.default ]; })
        (import ./nixos-modules/farm.nix { inherit lib; } description);

      # The example farm (nixos-modules/example-farm.nix) as complete hosts,
      # and a client host with `bb`: build one with
      # `nix build .#nixosConfigurations.scheduler.config.system.build.toplevel`,
      # run one as a VM with `nixos-rebuild build-vm --flake .#scheduler`,
      # deploy with `nixos-rebuild switch --flake .#worker1 --target-host ...`.
      nixosConfigurations =
        let
          host = modules: lib.nixosSystem {
            system = "x86_64-linux";
            modules = modules ++ [ ./nixos-modules/example-hardware.nix ];
          };
          client = import ./nixos-modules/example-client.nix self.packages.x86_64-linux.bb;
        in
        lib.mapAttrs (_: farmHost: host [ farmHost ]) (self.lib.mkFarm (import ./nixos-modules/example-farm.nix))
        // { client = host [ client ]; };

      nixosModules =
        let
          withPackages = module: {
            imports = [ module ];
            nixpkgs.overlays = [ self.overlays.default ];
          };
        in
        {
          default = withPackages ./nixos-modules;
          scheduler = withPackages ./nixos-modules/scheduler.nix;
          storage = withPackages ./nixos-modules/storage.nix;
          worker = withPackages {
            imports = [ ./nixos-modules/worker.nix ./nixos-modules/runner.nix ];
          };
          runner = withPackages ./nixos-modules/runner.nix;
        };

      checks = forAllSystems (pkgs:
        let
          built = build pkgs;
          inherit (built) craneLib common cargoArtifacts;
          # The VM tests get the modules and packages explicitly: the pkgs that
          # runNixOSTest gives its nodes is read-only, so no overlay.
          vmTest = file: import file {
            inherit pkgs;
            module = ./nixos-modules;
            packages = self.packages.${pkgs.stdenv.hostPlatform.system};
          };
        in
        {
          clippy = craneLib.cargoClippy (common // {
            inherit cargoArtifacts;
            cargoClippyExtraArgs = "--all-targets -- -D warnings";
          });
          fmt = craneLib.cargoFmt common;
          # The Rust test suite. Actions in the tests run with the PATH of
          # the test process; these provide the tools they call.
          tests = craneLib.cargoNextest (common // {
            inherit cargoArtifacts;
            nativeCheckInputs = [ pkgs.coreutils pkgs.findutils pkgs.gnugrep pkgs.util-linux ];
          });
          module-eval = pkgs.runCommand "module-eval"
            { passed = import ./checks/module-eval.nix { inherit lib; }; }
            ''test "$passed" = 1 && touch $out'';
          vm-farm = vmTest ./checks/vm/farm.nix;
          vm-isolation = vmTest ./checks/vm/isolation.nix;
          vm-worker-loss = vmTest ./checks/vm/worker-loss.nix;
          vm-secure-farm = vmTest ./checks/vm/secure-farm.nix;
          vm-example-farm = vmTest ./checks/vm/example-farm.nix;
        });

      devShells = forAllSystems (pkgs: {
        default = (build pkgs).craneLib.devShell {
          packages = [ pkgs.cargo-nextest pkgs.nixpkgs-fmt pkgs.deadnix ];
        };
      });
    };
}
