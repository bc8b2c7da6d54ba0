# The farm, worker-loss and isolation VM tests: the hosts of the flake's
# example farm (nixos-modules/example-farm.nix through the farm function, as
# an operator deploys them), on a test network nobody else is on, plus a
# client host. Given a test's name and script (and a module added to each
# worker host, for what a test sets beyond the description), makes the
# test; the script starts once all services are up and both workers
# registered, with `bb` holding the arguments bb exec needs on the client.
{ pkgs, module, packages }:
{ name, script, worker ? { } }:
let
  inherit (pkgs) lib;
  description = (import ./farms.nix { inherit lib; }).closed;
  farm = import ./hosts.nix { inherit lib module packages; } description
    (host: if description.workers ? ${host} then worker else { });
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
    ${builtins.readFile ./helpers.py}
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
