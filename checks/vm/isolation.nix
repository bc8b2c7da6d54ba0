# On one host with the whole farm: an action cannot write its inputs and the
# file cache stays intact; actions hold no capabilities, nor does the runner;
# an action's background process is gone after it.
{ pkgs, module, packages }:
pkgs.testers.runNixOSTest {
  name = "buildbarn-isolation";
  nodes.machine = { ... }: {
    imports = [ module ];
    services.buildbarn.scheduler = { enable = true; package = packages.bb-scheduler; };
    services.buildbarn.worker = { enable = true; package = packages.bb-worker; };
    services.buildbarn.runner.package = packages.bb-runner;
    environment.systemPackages = [ packages.bb ];
    virtualisation.memorySize = 1024;
  };
  testScript = ''
    machine.wait_for_unit("bb-scheduler.service")
    machine.wait_for_unit("bb-worker.service")
    machine.wait_for_open_port(8980)
    bb = "--env PATH=/run/current-system/sw/bin"
    machine.succeed("mkdir -p /tmp/in && echo original > /tmp/in/data.txt")
    machine.wait_until_succeeds(f"bb exec {bb} -- true")

    with subtest("an action cannot write or chmod its inputs, and the cache stays intact"):
        machine.fail(f"bb exec {bb} --input /tmp/in -- sh -c 'echo tampered >> data.txt'")
        machine.fail(f"bb exec {bb} --input /tmp/in -- chmod 0666 data.txt")
        digest = machine.succeed("sha256sum /tmp/in/data.txt").split()[0]
        cached = machine.succeed(f"cat /var/lib/bb-worker/cache/sha256-{digest}-9")
        assert cached == "original\n", cached
        machine.fail(f"bb exec {bb} -- ls /var/lib/bb-worker/cache")

    def no_capabilities(status):
        for line in status.strip().splitlines():
            assert line.split()[1] == "0000000000000000", line

    with subtest("an action holds no capabilities"):
        no_capabilities(machine.succeed(f"bb exec {bb} -- grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status"))

    with subtest("the runner holds none beyond its configured set (none)"):
        pid = machine.succeed("systemctl show -p MainPID --value bb-runner.service").strip()
        no_capabilities(machine.succeed(f"grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/{pid}/status"))

    with subtest("an action's background process is gone after it"):
        pid = machine.succeed(f"bb exec {bb} -- sh -c 'sleep 1000 & echo $!'").strip()
        machine.wait_until_fails(f"kill -0 {pid}", timeout=10)
  '';
}
