//! Where a seccomp filter refuses clone3 with ENOSYS, as systemd's
//! `RestrictNamespaces=` and container runtimes' default profiles do, the
//! runner still starts actions in their sandbox and their cgroup. Its own
//! binary: the filter is installed in this whole process before any
//! thread starts.

mod common;

/// Makes clone3 fail with ENOSYS in this thread and every thread and
/// process it starts from now on.
fn refuse_clone3() {
    const LOAD_SYSCALL_NUMBER: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RETURN: u16 = 0x06; // BPF_RET | BPF_K
    const ERRNO: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    let filter = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let program = [
        filter(LOAD_SYSCALL_NUMBER, 0, 0, 0),
        filter(JUMP_IF_EQUAL, 0, 1, libc::SYS_clone3 as u32),
        filter(RETURN, 0, 0, ERRNO | libc::ENOSYS as u32),
        filter(RETURN, 0, 0, ALLOW),
    ];
    let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr().cast_mut() };
    // SAFETY: prctl on this thread with a valid filter program.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &raw const prog),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn actions_start_in_their_sandbox_and_cgroup_without_clone3() {
    refuse_clone3();
    // SAFETY: a raw system call that the filter must refuse.
    let refused = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
    assert_eq!((refused, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::ENOSYS)));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let r =
            common::runner_with("[sandbox]\nrequire_isolation = true\n[sandbox.limits]\nprocesses = 64\n")
                .await;
        let script = "echo $$; grep -c action- /proc/self/cgroup";
        let response = r.run(r.action("a1", &["sh", "-c", script])).await.unwrap();
        assert_eq!(response.exit_code, 0, "{}", r.read("a1/stderr"));
        let out = r.read("a1/stdout");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("2"), "a PID namespace of its own: {out}");
        let in_cgroups: u32 = lines.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(in_cgroups > 0, "the action is in no cgroup of its own: {out}");
    });
}
