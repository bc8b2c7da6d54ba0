//! What an action can reach from its sandbox: its own processes, its own
//! /tmp, no network, a fixed hostname, none of the host's hidden paths.

mod common;

use common::{Runner, runner_with};
use std::time::Duration;

/// A runner that refuses to start without every namespace: the hostile
/// actions below must never run on the host itself (as root, `kill -9 -1`
/// there would end every process of the machine).
async fn runner() -> Runner {
    let r = runner_with("[sandbox]\nrequire_isolation = true\n").await;
    let response =
        r.run(r.action("isolated", &["sh", "-c", "echo $$"])).await.expect("the sandboxed runner runs");
    assert_eq!(r.read("isolated/stdout"), "2\n", "the action runs in a PID namespace of its own");
    assert_eq!(response.exit_code, 0);
    r
}

#[tokio::test]
async fn kill_every_process_reaches_only_the_action() {
    let r = runner().await;
    let response = r.run(r.action("k1", &["sh", "-c", "sleep 100 & kill -9 -1; echo $$"])).await.unwrap();
    // The shell killed its sleep (and, with SIGKILL to -1, not itself).
    assert_eq!(response.exit_code, 0, "{}", r.read("k1/stderr"));
    assert_eq!(r.read("k1/stdout"), "2\n", "the action's shell is the second process of its namespace");
    let response = r.run(r.action("k2", &["sh", "-c", "echo next"])).await.unwrap();
    assert_eq!((response.exit_code, r.read("k2/stdout").as_str()), (0, "next\n"), "the runner is up");
}

#[tokio::test]
async fn tmp_is_private_and_empty() {
    let r = runner().await;
    let marker = format!("bb-sandbox-test-{}", std::process::id());
    let script =
        format!("ls -A /tmp | grep -v '^\\.tmp' | wc -l; echo x > /tmp/{marker}; ls /dev/shm | wc -l");
    let response = r.run(r.action("p1", &["sh", "-c", &script])).await.unwrap();
    assert_eq!(response.exit_code, 0, "{}", r.read("p1/stderr"));
    assert_eq!(r.read("p1/stdout"), "0\n0\n", "nothing of the host's /tmp or /dev/shm");
    assert!(!std::path::Path::new("/tmp").join(&marker).exists(), "the write reached the host's /tmp");
    let response = r.run(r.action("p2", &["sh", "-c", &format!("test ! -e /tmp/{marker}")])).await.unwrap();
    assert_eq!(response.exit_code, 0, "the next action saw the last one's /tmp");
}

#[tokio::test]
async fn the_host_is_read_only_and_hidden_paths_are_empty() {
    let r = runner().await;
    let script = "touch /var/tmp/bb-sandbox-ro 2>/dev/null && echo wrote; ls -A /root | wc -l; \
                  ls -A $TMPDIR/../.. | tr '\\n' ' '; ls -A $TMPDIR/../../.bb-staging | wc -l; \
                  echo ok > /dev/null && echo devices work; hostname";
    let response = r.run(r.action("h1", &["sh", "-c", script])).await.unwrap();
    assert_eq!(response.exit_code, 0, "{}", r.read("h1/stderr"));
    // The build directory holds only this action's directory (root, tmp),
    // and the empty cover over where the others were staged.
    assert_eq!(r.read("h1/stdout"), "0\n.bb-staging h1 0\ndevices work\nlocalhost\n");
    assert!(!std::path::Path::new("/var/tmp/bb-sandbox-ro").exists());
}

/// A host listener on loopback: unreachable without network, reachable
/// when the operator allows it.
#[tokio::test]
async fn network_is_off_unless_allowed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
    let isolated = "[sandbox]\nrequire_isolation = true\n";
    for (extra, want) in
        [(isolated.to_string(), ""), (format!("{isolated}allow_network = true\n"), "connected\n")]
    {
        let r = runner_with(&extra).await;
        let response = r.run(r.action("n1", &["bash", "-c", &script])).await.unwrap();
        assert_eq!(r.read("n1/stdout"), want, "{extra:?}: {}", r.read("n1/stderr"));
        assert_eq!(response.exit_code == 0, !want.is_empty());
    }
    // Asking for it: given where the operator lets actions ask, refused
    // with a clear message elsewhere.
    for (extra, want) in
        [(format!("{isolated}network_property = true\n"), Ok("connected\n")), (isolated.to_string(), Err(()))]
    {
        let r = runner_with(&extra).await;
        let mut request = r.action("n3", &["bash", "-c", &script]);
        request.platform_properties.insert("dockerNetwork".into(), "bridge".into());
        match (r.run(request).await, want) {
            (Ok(response), Ok(want)) => {
                assert_eq!((response.exit_code, r.read("n3/stdout").as_str()), (0, want))
            }
            (Err(status), Err(())) => {
                assert_eq!(status.code(), tonic::Code::FailedPrecondition);
                assert!(status.message().contains("dockerNetwork=bridge"), "{}", status.message());
            }
            (got, _) => panic!("{extra:?}: {got:?}"),
        }
    }
    // Loopback of its own works.
    let r = runner().await;
    let script = "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); \
                  c=socket.create_connection(s.getsockname()); print(\"loopback\")'";
    let response = r.run(r.action("n2", &["sh", "-c", script])).await.unwrap();
    assert_eq!(
        (response.exit_code, r.read("n2/stdout").as_str()),
        (0, "loopback\n"),
        "{}",
        r.read("n2/stderr")
    );
}

/// Network namespaces are kept and lent again: never to two actions at
/// once, and never with anything the last one left listening.
#[tokio::test]
async fn kept_network_namespaces_are_never_shared_and_come_back_clean() {
    let r = runner().await;
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let listen = |wait: &str| {
        format!(
            "python3 -c 'import socket, time; s = socket.socket(); \
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", {port})); \
             s.listen(); print(\"listening\", flush=True); time.sleep({wait})'"
        )
    };
    let reach = format!("exec 3<>/dev/tcp/127.0.0.1/{port} 2>/dev/null && echo reached; true");
    // At once: one listens, the other must not reach it.
    let (listener, prober) = tokio::join!(
        r.run(r.action("l1", &["sh", "-c", &listen("1.5")])),
        r.run(r.action("l2", &["bash", "-c", &format!("sleep 0.7; {reach}")]))
    );
    assert_eq!(listener.unwrap().exit_code, 0, "{}", r.read("l1/stderr"));
    assert_eq!(r.read("l1/stdout"), "listening\n");
    assert_eq!(prober.unwrap().exit_code, 0);
    assert_eq!(r.read("l2/stdout"), "", "an action reached another's listener");
    // One after another, each leaving a listener behind in the background.
    let mut namespaces = Vec::new();
    for i in 0..6 {
        let id = format!("s{i}");
        let script = format!("readlink /proc/self/ns/net; {reach}; ({} &); sleep 0.3", listen("100"));
        let response = r.run(r.action(&id, &["bash", "-c", &script])).await.unwrap();
        assert_eq!(response.exit_code, 0, "{}", r.read(&format!("{id}/stderr")));
        let out = r.read(&format!("{id}/stdout"));
        assert!(!out.contains("reached"), "action {i} reached what an earlier one left: {out}");
        namespaces.push(out.lines().next().unwrap_or_default().to_string());
    }
    let mut distinct = namespaces.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() < namespaces.len(), "no network namespace was kept: {namespaces:?}");
}

/// 2,000 background sleeps and a process that keeps forking are gone once
/// the action's shell exits.
#[tokio::test]
async fn background_processes_end_with_the_action() {
    let r = runner().await;
    let script = "i=0; while [ $i -lt 2000 ]; do sleep 1000 & i=$((i+1)); done; \
                  (while :; do (sleep 1000 &) ; done) & sleep 0.5; echo spawned";
    let response = r.run(r.action("b1", &["sh", "-c", script])).await.unwrap();
    assert_eq!(
        (response.exit_code, r.read("b1/stdout").as_str()),
        (0, "spawned\n"),
        "{}",
        r.read("b1/stderr")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sleeps = std::process::Command::new("pgrep").args(["-c", "-f", "^sleep 1000$"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&sleeps.stdout).trim(), "0", "sleeps outlived the action");
}

fn cgroup_usage(
    response: &bb_proto::buildbarn::runner::RunResponse,
) -> bb_proto::bbrs::sandbox::CgroupResourceUsage {
    use prost::Message;
    let any =
        response.resource_usage.iter().find(|a| a.type_url.ends_with("bbrs.sandbox.CgroupResourceUsage"));
    bb_proto::bbrs::sandbox::CgroupResourceUsage::decode(
        any.expect("cgroup usage is reported").value.as_slice(),
    )
    .unwrap()
}

/// Past its memory limit an action is OOM-killed, and the usage says so;
/// a fork loop stops at the process limit.
#[tokio::test]
async fn limits_hold_and_usage_is_reported() {
    let r = runner_with(
        "[sandbox]\nrequire_isolation = true\n[sandbox.limits]\nmemory = \"64MiB\"\nprocesses = 64\n",
    )
    .await;
    let grow = "python3 -c 'x = bytearray(256 << 20); print(len(x))'";
    let response = r.run(r.action("m1", &["sh", "-c", grow])).await.unwrap();
    assert_ne!(response.exit_code, 0, "{}", r.read("m1/stdout"));
    let usage = cgroup_usage(&response);
    assert!(usage.oom_kills > 0, "{usage:?}");
    assert_eq!(usage.memory_limit_bytes, 64 << 20);

    let bomb = "i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done 2>/dev/null; echo done";
    let response = r.run(r.action("f1", &["sh", "-c", bomb])).await.unwrap();
    let usage = cgroup_usage(&response);
    assert!(usage.process_limit_hits > 0, "{usage:?}");
    assert_eq!(usage.process_limit, 64);

    let response = r
        .run(r.action("u1", &["sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"]))
        .await
        .unwrap();
    let usage = cgroup_usage(&response);
    assert_eq!(response.exit_code, 0);
    assert!(
        usage.memory_peak_bytes > 0 && usage.cpu_user_time.is_some_and(|t| t.nanos > 0 || t.seconds > 0),
        "{usage:?}"
    );
}

/// The cgroup an action runs in, as its `cat /proc/self/cgroup` printed it
/// (the memory hierarchy's line on v1, the unified one on v2).
fn cgroup_of(stdout: &str) -> String {
    let line = stdout.lines().find(|l| l.contains(":memory:") || l.starts_with("0::"));
    line.expect("a cgroup line").to_string()
}

/// A cgroup used again after an action that hit its limits gives the next
/// action nothing of it: no limit, no OOM kill or process limit hit, and a
/// peak of its own. (Nothing prepared ahead: each action takes the cgroup
/// the last one gave back.)
#[tokio::test]
async fn a_cgroup_used_again_starts_clean() {
    let r = runner_with("[sandbox]\nrequire_isolation = true\nprepared = 0\n").await;
    let limited = |id: &str, script: &str, limit: (&str, &str)| {
        let mut request = r.action(id, &["sh", "-c", &format!("cat /proc/self/cgroup; {script}")]);
        request.platform_properties.insert(limit.0.into(), limit.1.into());
        request
    };
    let grow = |mib: u32| format!("python3 -c 'x = bytearray({mib} << 20); print(len(x))' >/dev/null");
    let heavy = [
        limited("h1", &grow(256), ("memoryLimit", "64MiB")),
        limited(
            "h2",
            &format!("{}; i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done 2>/dev/null", grow(200)),
            ("processLimit", "64"),
        ),
    ];
    let mut used = Vec::new();
    for (index, request) in heavy.into_iter().enumerate() {
        let response = r.run(request).await.unwrap();
        let usage = cgroup_usage(&response);
        assert!(usage.oom_kills > 0 || usage.process_limit_hits > 0, "limits were hit: {usage:?}");
        used.push(cgroup_of(&r.read(&format!("h{}/stdout", index + 1))));
    }
    let mut again = false;
    for i in 0..8 {
        // The last action's cgroup is given back once its init is reaped.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let id = format!("l{i}");
        let script = format!("cat /proc/self/cgroup; {}", grow(96));
        let response = r.run(r.action(&id, &["sh", "-c", &script])).await.unwrap();
        assert_eq!(response.exit_code, 0, "no memory limit is left: {}", r.read(&format!("{id}/stderr")));
        let usage = cgroup_usage(&response);
        assert_eq!((usage.oom_kills, usage.process_limit_hits), (0, 0), "{usage:?}");
        assert_eq!((usage.memory_limit_bytes, usage.process_limit), (0, 0), "{usage:?}");
        let peak = usage.memory_peak_bytes;
        assert!((64 << 20..200 << 20).contains(&peak), "its own peak: {usage:?}");
        again |= used.contains(&cgroup_of(&r.read(&format!("{id}/stdout"))));
    }
    let v1 = std::fs::read_to_string("/proc/self/cgroup").unwrap().contains(":memory:");
    assert!(again || !v1, "on cgroup v1, the heavy actions' cgroups were used again");
}

/// Copies `program` and the shared libraries `ldd` names into `root`, at
/// the same paths.
fn install_with_libraries(program: &str, root: &std::path::Path) {
    let ldd = std::process::Command::new("ldd").arg(program).output().expect("ldd");
    let text = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let libraries = text.split_whitespace().filter(|w| w.starts_with('/')).map(str::to_string);
    for file in std::iter::once(program.to_string()).chain(libraries) {
        let target = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
}

/// chroot_into_input_root inside the mount namespace: the action sees its
/// input root as `/`, and still gets its PID namespace.
#[tokio::test]
async fn chroot_into_the_input_root_inside_the_namespaces() {
    let r = runner_with(
        "chroot_into_input_root = true\nkeep_capabilities = [\"CAP_SYS_CHROOT\"]\n[sandbox]\nrequire_isolation = true\n",
    )
    .await;
    let request = r.action("c1", &["/bin/sh", "-c", "echo $$; cd /; echo *; cd /work && pwd"]);
    let root = r.path("c1/root");
    install_with_libraries("/bin/sh", &root);
    std::fs::create_dir_all(root.join("work")).unwrap();
    let response = r.run(request).await.unwrap();
    assert_eq!(response.exit_code, 0, "{}", r.read("c1/stderr"));
    let top: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut top = top;
    top.sort();
    assert_eq!(r.read("c1/stdout"), format!("2\n{}\n/work\n", top.join(" ")));
}

/// The runner here keeps a full bounding set (a test, not `bb-runner`,
/// which empties its own where it can): its actions hold no capability in
/// any set all the same.
#[tokio::test]
async fn actions_hold_no_capabilities_whatever_the_runner_holds() {
    let r = runner().await;
    let response = r
        .run(r.action("c1", &["grep", "-E", "^Cap(Inh|Prm|Eff|Bnd|Amb)", "/proc/self/status"]))
        .await
        .unwrap();
    assert_eq!(response.exit_code, 0, "{}", r.read("c1/stderr"));
    let status = r.read("c1/stdout");
    assert_eq!(status.lines().count(), 5, "{status}");
    for line in status.lines() {
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
}
