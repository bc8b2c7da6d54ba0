# What the VM tests deploy beyond the example farm, in one place so that
# checks/module-eval.nix evaluates it too: the descriptions they give the
# farm function, and what the isolation test adds to each worker host.
{ lib }:
let
  example = import ../../nixos-modules/example-farm.nix;
in
{
  # The farm, worker-loss and isolation tests' farm: the example on a test
  # network nobody else is on, without tokens.
  closed = lib.recursiveUpdate (builtins.removeAttrs example [ "tokens" ]) {
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

  # The secure-farm test's: TLS everywhere, workers known by their
  # certificates alone, clients by their tokens, one storage node.
  secure = lib.recursiveUpdate (builtins.removeAttrs example [ "tokens" ]) {
    scheduler.openStatusPage = true;
    storage = { nodes.storage1 = { }; copies = 1; };
    tls = { ca = "/run/keys/bb-ca.pem"; directory = "/run/keys"; workerCertificates = true; };
    tokens = {
      inherit (example.tokens) file policy;
      scheduler = "/run/keys/bb-scheduler-token";
    };
  };

  # The isolation test's worker hosts: limits, isolation required, and
  # something on the host's loopback for actions to miss.
  isolationWorker = {
    services.buildbarn.runner = {
      limits = { memory = "128MiB"; processes = 512; };
      # Every namespace and a cgroup v2 each, or the runner does not start.
      settings.sandbox.require_isolation = true;
    };
    services.buildbarn.worker = {
      metricsPort = 7984;
      settings.authentication.anonymous_on_network = true;
    };
  };
}
