# The example farm's scheduler and two workers (from the farm function) and
# a client host. The client runs actions with `bb exec`: both workers run
# some, outputs come back, a second run is a cache hit, an action without a
# PATH finds the workers' toolchain, and the status page lists both workers.
{ pkgs, module, packages }:
import ./common.nix { inherit pkgs module packages; } {
  name = "buildbarn-farm";
  script = ''
    with subtest("both workers run actions"):
        runs_on_both_workers(bb)

    with subtest("outputs come back"):
        client.succeed(f"cd /tmp && bb exec {bb} --output out/result.txt -- sh -c 'echo hello > out/result.txt'")
        assert client.succeed("cat /tmp/out/result.txt").strip() == "hello"

    with subtest("a second run is a cache hit"):
        out = client.succeed(f"cd /tmp && bb exec {bb} -v --output out/result.txt -- sh -c 'echo hello > out/result.txt' 2>&1")
        assert "cached=true" in out, out

    with subtest("an action that sets no PATH finds the workers' declared toolchain"):
        out = client.succeed("bb exec --endpoint grpc://scheduler:8980 --env GREETING=1 -- hello")
        assert "Hello, world!" in out, out

    with subtest("the status page lists both workers"):
        page = client.succeed("curl -sf http://scheduler:7982/")
        assert "host=worker1" in page and "host=worker2" in page, page
  '';
}
