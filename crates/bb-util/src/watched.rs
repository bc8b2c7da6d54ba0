//! A value read from files and read again when they change: server
//! certificates, JWKS key sets, token lists. Changes are noticed by
//! modification time and size, looked at no more than once a second, on
//! use; a new version that does not parse is refused, and the last good
//! one stays in use (a file may be caught half written).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often, at most, the files are looked at again.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// When each file last changed, and its size.
type Stamp = Vec<Option<(SystemTime, u64)>>;

pub struct Watched<T> {
    paths: Vec<PathBuf>,
    /// What the files are called in log lines ("TLS certificate", "JWKS").
    what: &'static str,
    load: Box<dyn Fn() -> Result<T, String> + Send + Sync>,
    state: parking_lot::Mutex<State<T>>,
}

struct State<T> {
    value: Arc<T>,
    stamp: Stamp,
    checked: Instant,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("what", &self.what).field("paths", &self.paths).finish()
    }
}

fn stamp(paths: &[PathBuf]) -> Stamp {
    paths
        .iter()
        .map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

impl<T> Watched<T> {
    /// Reads the value now with `load`, failing as it fails.
    pub fn new<E: std::fmt::Display>(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: impl Fn() -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Self, E> {
        let stamp = stamp(&paths);
        let value = Arc::new(load()?);
        Ok(Watched {
            paths,
            what,
            load: Box::new(move || load().map_err(|e| e.to_string())),
            state: parking_lot::Mutex::new(State { value, stamp, checked: Instant::now() }),
        })
    }

    /// The value of the files as last read successfully.
    pub fn current(&self) -> Arc<T> {
        let mut state = self.state.lock();
        if state.checked.elapsed() >= CHECK_INTERVAL {
            state.checked = Instant::now();
            let stamp = stamp(&self.paths);
            if stamp != state.stamp {
                match (self.load)() {
                    Ok(value) => {
                        tracing::info!("{}: read again from {}", self.what, self.paths[0].display());
                        state.value = Arc::new(value);
                        state.stamp = stamp;
                    }
                    // Tried again at the next check.
                    Err(e) => tracing::warn!("{}: keeping the version in use: {e}", self.what),
                }
            }
        }
        state.value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_read_again_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let read = path.clone();
        let watched = Watched::new("number", vec![path.clone()], move || {
            std::fs::read_to_string(&read)
                .map_err(|e| e.to_string())?
                .trim()
                .parse::<u32>()
                .map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(*watched.current(), 1);
        std::fs::write(&path, "22").unwrap();
        std::thread::sleep(CHECK_INTERVAL);
        assert_eq!(*watched.current(), 22);
        std::fs::write(&path, "bad").unwrap();
        std::thread::sleep(CHECK_INTERVAL);
        assert_eq!(*watched.current(), 22, "the last good value stays");
    }
}
