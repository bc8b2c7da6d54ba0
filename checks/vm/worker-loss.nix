# Stopping the worker service that runs an action, mid-action: the action is
# handed back to the scheduler, runs on the other worker, and the client
# sees success.
{ pkgs, module, packages }:
import ./common.nix { inherit pkgs module packages; } {
  name = "buildbarn-worker-loss";
  script = ''
    client.execute(
        # The driver waits until the command's output closes: the
        # background job must not hold it.
        f"(bb exec {bb} -v -- sh -c 'sleep 15; echo finished' >/tmp/long.out 2>/tmp/long.err; echo $? >/tmp/long.rc) >/dev/null 2>&1 &"
    )
    scheduler.wait_until_succeeds(
        "curl -sf http://localhost:7982/api/status | jq -e '[.workers[] | select(.operation != null)] | length == 1'"
    )
    running_on = scheduler.succeed(
        "curl -sf http://localhost:7982/api/status | jq -r '.workers[] | select(.operation != null) | .labels.host'"
    ).strip()
    victim, survivor = (worker1, "worker2") if running_on == "worker1" else (worker2, "worker1")

    with subtest(f"stopping {running_on} hands its action to {survivor}"):
        victim.systemctl("stop bb-worker.service")
        client.wait_until_succeeds("test -f /tmp/long.rc", timeout=180)
        assert client.succeed("cat /tmp/long.rc").strip() == "0", client.succeed("cat /tmp/long.err")
        assert client.succeed("cat /tmp/long.out").strip() == "finished"
        assert f"worker={survivor}" in client.succeed("cat /tmp/long.err")
  '';
}
