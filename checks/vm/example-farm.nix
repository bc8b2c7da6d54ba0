# The flake's example farm as nixosConfigurations defines it (the farm
# function over nixos-modules/example-farm.nix, and the client host),
# with the operator's token files put in /run/keys: both workers register
# with their token, a client with the `ci` token runs actions on both, an
# action that sets no PATH finds the declared toolchain, and a client
# without a token is refused. Its interactive driver is `nix run
# .#example-farm`: the whole farm as VMs on one machine, with their network.
{ pkgs, module, packages }:
let
  inherit (pkgs) lib;
  example = import ../../nixos-modules/example-farm.nix;
  credentials = pkgs.runCommand "bb-example-credentials" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    mkdir $out
    cd $out
    openssl rand -hex 32 > bb-worker-token
    openssl rand -hex 32 > ci-token
    hash() { tr -d '\n' < "$1" | sha256sum | cut -d' ' -f1; }
    printf 'worker = "%s"\nci = "%s"\n' "$(hash bb-worker-token)" "$(hash ci-token)" > bb-tokens.toml
  '';
  keys = import ./keys.nix credentials;
  farm = import ./hosts.nix { inherit lib module packages; } example
    (host: keys (if host == "scheduler" then [ "bb-tokens.toml" ] else [ "bb-worker-token" ]));
in
pkgs.testers.runNixOSTest {
  name = "buildbarn-example-farm";
  nodes = farm // {
    scheduler = { pkgs, ... }: {
      imports = [ farm.scheduler ];
      environment.systemPackages = [ pkgs.curl pkgs.jq ];
    };
    client = import ../../nixos-modules/example-client.nix packages.bb;
  };

  testScript = ''
    ${builtins.readFile ./helpers.py}
    token = "--token-file ${credentials}/ci-token"
    # The status page is closed to the network: asked on the scheduler.
    status = "curl -sf -H \"Authorization: Bearer $(cat ${credentials}/ci-token)\" http://localhost:7982/api/status"
    start_all()
    scheduler.wait_for_unit("bb-scheduler.service")
    scheduler.wait_for_open_port(8980)
    scheduler.wait_until_succeeds(f"{status} | jq -e '[.workers[].labels.host] | unique == [\"worker1\", \"worker2\"]'")
    bb = f"--endpoint grpc://scheduler:8980 {token} --env PATH=/run/current-system/sw/bin"

    with subtest("a client with the ci token runs actions on both workers"):
        runs_on_both_workers(bb)

    with subtest("an action that sets no PATH finds the declared toolchain"):
        out = client.succeed(f"bb exec --endpoint grpc://scheduler:8980 {token} --env GREETING=1 -- gcc --version")
        assert "gcc" in out, out

    with subtest("a client without a token is refused"):
        out = client.fail("bb exec --endpoint grpc://scheduler:8980 -- true 2>&1")
        assert "not authenticated" in out, out
  '';
}
