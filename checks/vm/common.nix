# The farm and worker-loss VM tests: a scheduler host, two worker hosts and
# a client host. Given a test's name and script, makes the test; the script
# starts once all services are up and both workers registered, with `bb`
# holding the arguments bb exec needs on the client.
{ pkgs, module, packages }:
{ name, script }:
let
  worker = { ... }: {
    imports = [ module ];
    services.buildbarn.worker = {
      enable = true;
      package = packages.bb-worker;
      schedulerEndpoint = "grpc://scheduler:8983";
      storageEndpoint = "grpc://scheduler:8980";
      settings.concurrency = 2;
      # Stopped mid-action, a worker hands its action back after this.
      settings.shutdown_grace = "2s";
    };
    services.buildbarn.runner.package = packages.bb-runner;
    virtualisation.memorySize = 1024;
  };
in
pkgs.testers.runNixOSTest {
  inherit name;
  nodes = {
    scheduler = { pkgs, ... }: {
      imports = [ module ];
      services.buildbarn.scheduler = {
        enable = true;
        package = packages.bb-scheduler;
        openFirewall = true;
        openFirewallStatusPage = true;
        # The test network holds only the test's hosts.
        settings.authentication.anonymous_on_network = true;
        # Notice lost workers quickly.
        settings.scheduler.worker_timeout = "10s";
        settings.scheduler.executing_sync_interval = "2s";
        settings.scheduler.idle_sync_wait = "5s";
      };
      environment.systemPackages = [ pkgs.curl pkgs.jq ];
    };
    worker1 = worker;
    worker2 = worker;
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
