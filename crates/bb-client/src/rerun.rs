//! The `bb` command lines that fetch an action's inputs and run it again:
//! shown on the action's page, printed by `bb action download`.

use bb_proto::reapi;
use bb_util::Digest;

/// Words joined as a POSIX shell reads them back.
pub fn shell_line(words: &[String]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| shlex::try_quote(w).map_or_else(|_| format!("{w:?}"), |q| q.into_owned()))
        .collect();
    quoted.join(" ")
}

fn instance_flag(instance: &str) -> Vec<String> {
    if instance.is_empty() { vec![] } else { vec!["--instance".into(), instance.into()] }
}

/// `bb action download` of the action's input root into `directory`.
pub fn download_line(instance: &str, action: &Digest, directory: &str) -> String {
    let mut words = vec!["bb".to_string(), "action".into(), "download".into()];
    words.extend(instance_flag(instance));
    words.push(format!("{}:{action}", action.function().name()));
    words.push(directory.into());
    shell_line(&words)
}

/// `bb exec` of the same command, platform, environment, working directory,
/// timeout and outputs, with `directory` as the input root; `--no-cache`,
/// so it runs rather than answering from the Action Cache.
pub fn exec_line(
    instance: &str,
    action: &reapi::Action,
    command: &reapi::Command,
    directory: &str,
) -> String {
    let mut words = vec!["bb".to_string(), "exec".into()];
    words.extend(instance_flag(instance));
    words.extend(["--input".into(), directory.into()]);
    if !command.working_directory.is_empty() {
        words.extend(["--cwd".into(), command.working_directory.clone()]);
    }
    let properties = match (&action.platform, &command.platform) {
        (Some(p), _) if !p.properties.is_empty() => p.properties.as_slice(),
        (_, Some(p)) => p.properties.as_slice(),
        _ => &[],
    };
    for p in properties {
        words.extend(["--platform".into(), format!("{}={}", p.name, p.value)]);
    }
    for v in &command.environment_variables {
        words.extend(["--env".into(), format!("{}={}", v.name, v.value)]);
    }
    if let Some(t) = &action.timeout {
        let millis = t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000);
        words.extend([
            "--timeout".into(),
            if millis % 1000 == 0 { format!("{}s", millis / 1000) } else { format!("{millis}ms") },
        ]);
    }
    #[allow(deprecated)]
    let outputs: Vec<&String> = if command.output_paths.is_empty() {
        command.output_files.iter().chain(&command.output_directories).collect()
    } else {
        command.output_paths.iter().collect()
    };
    for output in outputs {
        words.extend(["--output".into(), output.clone()]);
    }
    words.extend(["--no-cache".into(), "--".into()]);
    words.extend(command.arguments.iter().cloned());
    shell_line(&words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bb_util::DigestFunction;

    #[test]
    fn the_rerun_line_carries_everything_the_action_set() {
        let command = reapi::Command {
            arguments: vec!["sh".into(), "-c".into(), "echo 'a b' > out/x".into()],
            environment_variables: vec![reapi::command::EnvironmentVariable {
                name: "A".into(),
                value: "1 2".into(),
            }],
            output_paths: vec!["out/x".into()],
            working_directory: "sub".into(),
            ..Default::default()
        };
        let action = reapi::Action {
            timeout: Some(prost_types::Duration { seconds: 90, nanos: 0 }),
            platform: Some(reapi::Platform {
                properties: vec![reapi::platform::Property {
                    name: "OSFamily".into(),
                    value: "linux".into(),
                }],
            }),
            ..Default::default()
        };
        assert_eq!(
            exec_line("main", &action, &command, "inputs"),
            "bb exec --instance main --input inputs --cwd sub --platform 'OSFamily=linux' --env 'A=1 2' \
             --timeout 90s --output out/x --no-cache -- sh -c \"echo 'a b' > out/x\""
        );
        let digest = Digest::of(DigestFunction::Sha256, b"x");
        assert_eq!(download_line("", &digest, "in"), format!("bb action download sha256:{digest} in"));
    }
}
