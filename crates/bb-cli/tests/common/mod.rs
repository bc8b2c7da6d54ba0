//! A `bb farm` on spare ports, for the tests that drive the `bb` binary.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BB: &str = env!("CARGO_BIN_EXE_bb");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Farm {
    pub child: Child,
    pub endpoint: String,
    pub status: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Farm {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

pub fn start_farm() -> Farm {
    start_farm_with(&[])
}

pub fn start_farm_with(extra: &[&str]) -> Farm {
    let dir = tempfile::tempdir().unwrap();
    // As root the farm's users must reach the state directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (port, http, worker) = (free_port(), free_port(), free_port());
    let child = Command::new(BB)
        .args(["farm", "--slots", "2", "--listen", "127.0.0.1"])
        .args([
            "--port",
            &port.to_string(),
            "--http-port",
            &http.to_string(),
            "--worker-port",
            &worker.to_string(),
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(extra)
        .stdout(std::fs::File::create(dir.path().join("farm.out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("farm.err")).unwrap())
        .spawn()
        .unwrap();
    let farm = Farm {
        child,
        endpoint: format!("grpc://127.0.0.1:{port}"),
        status: format!("http://127.0.0.1:{http}"),
        dir,
    };
    for _ in 0..200 {
        if std::fs::read_to_string(farm.dir.path().join("farm.out")).unwrap_or_default().contains("Ctrl-C") {
            return farm;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "bb farm did not come up: {}",
        std::fs::read_to_string(farm.dir.path().join("farm.err")).unwrap_or_default()
    );
}

impl Farm {
    pub fn bb(&self, args: &[&str], cwd: &Path) -> Output {
        Command::new(BB)
            .args(args)
            .env("BB_ENDPOINT", &self.endpoint)
            .env("BB_STATUS_URL", &self.status)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}
