# Python the VM test scripts share (read into their testScript).


def runs_on_both_workers(bb):
    """Runs 24 short actions with `bb exec {bb}` on the client and asserts
    that both workers ran some of them."""
    hosts = set()
    for i in range(24):
        out = client.succeed(f"bb exec {bb} -v -- sh -c 'sleep 0.2; echo run-{i}' 2>&1")
        assert f"run-{i}" in out, out
        hosts.update(word.split("=", 1)[1] for word in out.split() if word.startswith("worker="))
    assert hosts == {"worker1", "worker2"}, f"actions ran on {hosts}"
