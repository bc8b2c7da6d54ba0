# All Buildbarn-in-Rust roles: services.buildbarn.{scheduler,storage,worker,runner}.
{
  imports = [
    ./scheduler.nix
    ./storage.nix
    ./worker.nix
    ./runner.nix
  ];
}
