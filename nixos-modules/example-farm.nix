# The example farm of the flake (nixosConfigurations.scheduler, .worker1,
# .worker2): a scheduler with embedded storage and two workers, the workers
# presenting a token the scheduler checks, as do clients (`ci`). The files are the operator's,
# on each host; none of them is in the Nix store.
{
  scheduler = {
    host = "scheduler";
    openStatusPage = false;
  };
  workers =
    let
      # What actions that set no PATH find: a C toolchain.
      toolchain = pkgs: [ pkgs.gcc pkgs.binutils pkgs.coreutils ];
    in
    {
      worker1 = { concurrency = 2; inherit toolchain; };
      worker2 = { concurrency = 2; inherit toolchain; };
    };
  tokens = {
    file = "/run/keys/bb-tokens.toml";
    worker = "/run/keys/bb-worker-token";
    # The clients' tokens are in the same file: `ci` may build.
    policy = [{ identities = [ "ci" ]; permissions = [ "execute" "read" "write-cas" ]; }];
  };
}
