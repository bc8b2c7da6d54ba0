//! What an action tries against its sandbox: signalling every process,
//! writing the host's /tmp, reaching the host's loopback, using too much
//! memory, forking without end, ignoring TERM. The farm runs with
//! `--action-memory 1GiB --action-processes 4096 --network-property`.

use super::{Case, Outcome};
use bb_proto::bbrs::sandbox::CgroupResourceUsage;
use bb_proto::buildbarn::resourceusage::PosixResourceUsage;
use bb_proto::reapi;
use prost::Name;
use std::time::Duration;
use tonic::Code;

/// Processes on this host whose command line is exactly `words`.
fn processes_running(words: &[&str]) -> usize {
    let wanted: Vec<u8> = words.iter().flat_map(|w| w.bytes().chain([0])).collect();
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
        .count()
}

fn stdout_of(outcome: &Outcome) -> String {
    outcome.stdout.as_ref().map(|s| String::from_utf8_lossy(s).into_owned()).unwrap_or_default()
}

fn auxiliary<'a>(outcome: &'a Outcome, type_url: &str) -> Option<&'a prost_types::Any> {
    let metadata = outcome.response.as_ref()?.result.as_ref()?.execution_metadata.as_ref()?;
    metadata.auxiliary_metadata.iter().find(|a| a.type_url == type_url)
}

pub fn cases(salt: &str, port: u16) -> Vec<Case> {
    let marker = format!("/tmp/bb-hostile-{salt}");
    let host_marker = marker.clone();
    vec![
        Case::shell("kill -9 -1", "sleep 1000 & kill -9 -1; echo survived", Code::Ok).prints("survived\n"),
        Case::shell("a write to /tmp", &format!("echo x > {marker} && echo wrote"), Code::Ok)
            .prints("wrote\n")
            .checked(move |_| match std::path::Path::new(&host_marker).exists() {
                true => Err(format!("{host_marker} appeared on the host")),
                false => Ok(()),
            }),
        Case::shell(
            "the last action's /tmp",
            &format!("test -e {marker} && echo seen || echo clean"),
            Code::Ok,
        )
        .prints("clean\n"),
        Case::shell(
            "a connection to the host's loopback",
            &format!(
                "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null && echo connected || echo refused"
            ),
            Code::Ok,
        )
        .prints("refused\n"),
        Case::shell(
            "the same connection, asking for the network (dockerNetwork=bridge)",
            &format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo connected"),
            Code::Ok,
        )
        .prints("connected\n")
        .with(|c| {
            let network = reapi::platform::Property { name: "dockerNetwork".into(), value: "bridge".into() };
            c.platform = Some(reapi::Platform { properties: vec![network] });
        }),
        Case::shell(
            "3 GiB against a 1 GiB limit",
            "head -c 3G /dev/zero | tail > /dev/null; echo $?",
            Code::Ok,
        )
        .checked(|outcome| {
            let said = outcome.message.contains("out of memory") && outcome.message.contains("1GiB");
            said.then_some(()).ok_or_else(|| format!("no out-of-memory message: {:?}", outcome.message))
        }),
        Case::shell(
            "2,000 background sleeps and a fork loop",
            "i=0; while [ $i -lt 2000 ]; do sleep 1001 & i=$((i+1)); done; \
             (while :; do (sleep 1002 &) 2>/dev/null; done) & sleep 1; echo spawned",
            Code::Ok,
        )
        .prints("spawned\n")
        .checked(|_| {
            std::thread::sleep(Duration::from_millis(500));
            let left = processes_running(&["sleep", "1001"]) + processes_running(&["sleep", "1002"]);
            (left == 0).then_some(()).ok_or_else(|| format!("{left} of its sleeps outlived the action"))
        }),
        Case {
            timeout: Duration::from_secs(1),
            ..Case::shell(
                "an action that traps TERM at its timeout",
                "trap 'echo got TERM; exit 1' TERM; echo started; sleep 1000 & wait",
                Code::DeadlineExceeded,
            )
        }
        .checked(|outcome| {
            let stdout = stdout_of(outcome);
            (stdout == "started\ngot TERM\n").then_some(()).ok_or_else(|| format!("stdout {stdout:?}"))
        }),
        Case {
            timeout: Duration::from_secs(1),
            ..Case::shell(
                "an action that ignores TERM",
                "trap '' TERM; echo started; while :; do sleep 0.1; done",
                Code::DeadlineExceeded,
            )
        }
        .checked(|outcome| match outcome.elapsed {
            // The timeout, then the runner's 5 s grace, then KILL.
            elapsed if elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(20) => Ok(()),
            elapsed => Err(format!("ended after {elapsed:?}, not after the grace period")),
        }),
        Case::shell("resource usage", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done", Code::Ok).checked(
            |outcome| {
                let cgroup = auxiliary(outcome, &CgroupResourceUsage::type_url())
                    .and_then(|a| a.to_msg::<CgroupResourceUsage>().ok())
                    .ok_or("no CgroupResourceUsage in the auxiliary metadata")?;
                let posix = auxiliary(outcome, &PosixResourceUsage::type_url())
                    .and_then(|a| a.to_msg::<PosixResourceUsage>().ok())
                    .ok_or("no POSIXResourceUsage in the auxiliary metadata")?;
                let cpu = cgroup.cpu_user_time.unwrap_or_default();
                let measured = cgroup.memory_peak_bytes > 0 && (cpu.seconds > 0 || cpu.nanos > 0);
                (measured && posix.maximum_resident_set_size > 0)
                    .then_some(())
                    .ok_or_else(|| format!("usage not measured: {cgroup:?}"))
            },
        ),
    ]
}
