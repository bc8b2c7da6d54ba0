# The farm and worker-loss VM tests: the hosts of the flake's example farm
# (nixos-modules/example-farm.nix through the farm function, as an operator
# deploys them), on a test network nobody else is on, plus a client host.
# Given a test's name and script, makes the test; the script starts once all
# services are up and both workers registered, with `bb` holding the
# arguments bb exec needs on the client.
{ pkgs, module, packages }:
{ name, script }:
let
  inherit (pkgs) lib;
  mkFarm = import ../../nixos-modules/farm.nix { inherit lib; };
  example = import ../../nixos-modules/example-farm.nix;
  description = lib.recursiveUpdate (builtins.removeAttrs example [ "tokens" ]) {
    # The test network holds only the test's hosts.
    anonymousOnNetwork = true;
    scheduler.openStatusPage = true;
    # Notice lost workers quickly.
    scheduler.settings.scheduler = { worker_timeout = "10s"; executing_sync_interval = "2s"; idle_sync_wait = "5s"; };
    # Stopped mid-action, a worker hands its action back after this.
    workers = lib.genAttrs [ "worker1" "worker2" ] (_: {
      settings.shutdown_grace = "2s";
      toolchain = p: [ p.hello ];
    });
  };
  # The programs of this checkout: the test's pkgs take no overlay.
  programs = {
    services.buildbarn.scheduler.package = packages.bb-scheduler;
    services.buildbarn.storage.package = packages.bb-storage;
    services.buildbarn.worker.package = packages.bb-worker;
    services.buildbarn.runner.package = packages.bb-runner;
    virtualisation.memorySize = 1024;
  };
  farm = lib.mapAttrs (_: host: { imports = [ module host programs ]; }) (mkFarm description);
in
pkgs.testers.runNixOSTest {
  inherit name;
  nodes = farm // {
    scheduler = { pkgs, ... }: {
      imports = [ farm.scheduler ];
      environment.systemPackages = [ pkgs.curl pkgs.jq ];
    };
    client = { pkgs, ... }: {
      environment.systemPackages = [ packages.bb pkgs.curl ];
    };
  };

  testScript = ''
    start_all()
    scheduler.wait_for_unit("bb-scheduler.service")
    scheduler.wait_for_open_port(8980)
    for worker in (worker1, worker2):
        worker.wait_for_unit("bb-runner.service")
        worker.wait_for_unit("bb-worker.service")
    scheduler.wait_until_succeeds(
        "curl -sf http://localhost:7982/api/status | jq -e '[.workers[].labels.host] | unique | length == 2'"
    )
    # Actions run on NixOS workers: their tools are in the system profile.
    bb = "--endpoint grpc://scheduler:8980 --env PATH=/run/current-system/sw/bin"

    ${script}
  '';
}
