# The example farm of the flake (nixosConfigurations.scheduler, .worker1,
# .worker2): a scheduler with embedded storage and two workers, the workers
# presenting a token the scheduler checks. The files are the operator's,
# on each host; none of them is in the Nix store.
{
  scheduler = {
    host = "scheduler";
    openStatusPage = false;
  };
  workers = {
    worker1 = { concurrency = 2; };
    worker2 = { concurrency = 2; };
  };
  tokens = {
    file = "/run/keys/bb-tokens.toml";
    worker = "/run/keys/bb-worker-token";
  };
}
