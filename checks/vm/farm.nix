# The example farm's scheduler and two workers (from the farm function) and
# a client host. The client runs actions with `bb exec`: both workers run
# some, outputs come back, a second run is a cache hit, an action without a
# PATH finds the workers' toolchain, and the status page lists both workers.
{ pkgs, module, packages }:
import ./common.nix { inherit pkgs module packages; } {
  name = "buildbarn-farm";
  script = ''
    with subtest("both workers run actions"):
        hosts = set()
        for i in range(24):
            out = client.succeed(f"bb exec {bb} -v -- sh -c 'sleep 0.2; echo run-{i}' 2>&1")
            assert f"run-{i}" in out, out
            hosts.update(word.split("=", 1)[1] for word in out.split() if word.startswith("worker="))
        assert hosts == {"worker1", "worker2"}, f"actions ran on {hosts}"

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
