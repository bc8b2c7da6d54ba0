# The example farm's hosts (from the farm function), with a memory and a
# process limit on each worker's runner and isolation required. Worker2 is
# stopped, so every action runs on worker1, where the test looks. An action
# cannot write its inputs and the file cache stays intact; actions hold no
# capabilities, nor does the runner; each action has namespaces and a
# cgroup (v2, delegated by systemd) of its own: `kill -9 -1`, /tmp, the
# host's loopback, memory, fork loops and TERM at the timeout are
# contained; its background processes end with it.
{ pkgs, module, packages }:
import ./common.nix { inherit pkgs module packages; } {
  name = "buildbarn-isolation";
  worker = (import ./farms.nix { inherit (pkgs) lib; }).isolationWorker;
  script = ''
    worker2.systemctl("stop bb-worker.service")
    scheduler.wait_until_succeeds(
        "curl -sf http://localhost:7982/api/status | jq -e '[.workers[].labels.host] | unique == [\"worker1\"]'"
    )
    client.succeed("mkdir -p /tmp/in && echo original > /tmp/in/data.txt")
    client.succeed(f"bb exec {bb} -- true")

    with subtest("an action cannot write or chmod its inputs, and the cache stays intact"):
        client.fail(f"bb exec {bb} --input /tmp/in -- sh -c 'echo tampered >> data.txt'")
        client.fail(f"bb exec {bb} --input /tmp/in -- chmod 0666 data.txt")
        digest = client.succeed("sha256sum /tmp/in/data.txt").split()[0]
        cached = worker1.succeed(f"cat /var/lib/bb-worker/cache/sha256-{digest}-9")
        assert cached == "original\n", cached
        client.fail(f"bb exec {bb} -- ls /var/lib/bb-worker/cache")

    def no_capabilities(status):
        for line in status.strip().splitlines():
            assert line.split()[1] == "0000000000000000", line

    with subtest("an action holds no capabilities"):
        no_capabilities(client.succeed(f"bb exec {bb} -- grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status"))

    with subtest("the runner holds none beyond its configured set (none)"):
        pid = worker1.succeed("systemctl show -p MainPID --value bb-runner.service").strip()
        no_capabilities(worker1.succeed(f"grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/{pid}/status"))

    with subtest("an action's background process is gone after it"):
        client.succeed(f"bb exec {bb} -- sh -c 'sleep 1003 &'")
        worker1.wait_until_fails("pgrep -x -f 'sleep 1003'", timeout=10)

    with subtest("the runner makes a cgroup v2 per action in its delegated cgroup"):
        worker1.succeed("journalctl -u bb-runner.service | grep 'each action runs with namespaces, a cgroup each (cgroup v2'")

    with subtest("kill -9 -1 reaches only the action"):
        out = client.succeed(f"bb exec {bb} -- sh -c 'sleep 100 & kill -9 -1; echo survived'")
        assert out == "survived\n", out
        worker1.succeed("systemctl is-active bb-runner.service bb-worker.service")
        client.succeed(f"bb exec {bb} -- true")

    with subtest("/tmp is the action's own"):
        client.succeed(f"bb exec {bb} -- sh -c 'echo x > /tmp/bb-vm-marker'")
        client.succeed(f"bb exec {bb} -- sh -c 'test ! -e /tmp/bb-vm-marker'")
        worker1.fail("test -e /tmp/bb-vm-marker")

    with subtest("the host's loopback is out of reach"):
        worker1.wait_for_open_port(7984)
        worker1.succeed("bash -c 'exec 3<>/dev/tcp/127.0.0.1/7984'")
        client.fail(f"bb exec {bb} -- bash -c 'exec 3<>/dev/tcp/127.0.0.1/7984'")

    with subtest("past its memory limit an action fails, saying so"):
        out = client.succeed(f"bb exec {bb} -- sh -c 'head -c 512M /dev/zero | tail >/dev/null' 2>&1 || true")
        assert "out of memory" in out and "128MiB" in out, out
        client.succeed(f"bb exec {bb} -- true")

    with subtest("a fork loop stops at the process limit and is gone after"):
        out = client.succeed(
            f"bb exec {bb} -- sh -c 'i=0; while [ $i -lt 2000 ]; do sleep 1001 & i=$((i+1)); done 2>/dev/null; echo done' 2>&1"
        )
        assert "limit of 512 processes" in out, out
        worker1.wait_until_fails("pgrep -x -f 'sleep 1001'", timeout=10)

    with subtest("at its timeout an action gets TERM first"):
        out = client.succeed(
            f"bb exec {bb} --timeout 2s -- sh -c \"trap 'echo got TERM; exit 1' TERM; sleep 1000 & wait\" 2>&1; echo exit=$?"
        )
        assert "got TERM" in out and "exit=124" in out, out
  '';
}
