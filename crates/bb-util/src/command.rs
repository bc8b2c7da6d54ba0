//! Checks of a Command that every program applies before acting on it: the
//! scheduler before it queues the action, the worker before it runs it.

use crate::path::RelativePath;
use bb_proto::reapi;
use tonic::Status;

/// Whether `command` can be run as written: arguments without NUL (exec
/// cannot carry it), environment variable names without `=` or NUL (a name
/// `A=B` would set a different variable), values without NUL, and a working
/// directory and output paths inside the input root.
pub fn check(command: &reapi::Command) -> Result<(), Status> {
    if command.arguments.is_empty() {
        return Err(Status::invalid_argument("the Command has no arguments"));
    }
    if let Some(index) = command.arguments.iter().position(|a| a.contains('\0')) {
        return Err(Status::invalid_argument(format!("argument {index} of the Command contains NUL")));
    }
    for variable in &command.environment_variables {
        let name = &variable.name;
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "environment variable name {name:?} is empty or contains '=' or NUL"
            )));
        }
        if variable.value.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "the value of environment variable {name:?} contains NUL"
            )));
        }
    }
    let working = RelativePath::parse("working_directory", &command.working_directory)?;
    #[allow(deprecated)]
    let outputs = command.output_paths.iter().chain(&command.output_files).chain(&command.output_directories);
    for output in outputs {
        RelativePath::resolve_from("output path", &working, output)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(name: &str, value: &str) -> reapi::Command {
        reapi::Command {
            arguments: vec!["true".into()],
            environment_variables: vec![reapi::command::EnvironmentVariable {
                name: name.into(),
                value: value.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn environment_names_and_values() {
        assert!(check(&command("PATH", "/bin:a=b")).is_ok());
        for (name, value) in [("A=INJECTED", "1"), ("", "x"), ("A\0B", "1"), ("A", "x\0y")] {
            let error = check(&command(name, value)).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{name:?}={value:?}");
        }
        assert!(check(&command("A=INJECTED", "1")).unwrap_err().message().contains("A=INJECTED"));
    }

    #[test]
    fn arguments_and_paths() {
        let mut bad = command("A", "1");
        bad.arguments = vec![];
        assert!(check(&bad).is_err());
        bad.arguments = vec!["a\0b".into()];
        assert!(check(&bad).is_err());
        let mut paths = command("A", "1");
        paths.working_directory = "a/b".into();
        paths.output_paths = vec!["../../out".into()];
        assert!(check(&paths).is_ok());
        paths.output_paths = vec!["../../../out".into()];
        assert!(check(&paths).unwrap_err().message().contains("above the input root"));
        paths.working_directory = "../x".into();
        paths.output_paths = vec![];
        assert!(check(&paths).is_err());
    }
}
