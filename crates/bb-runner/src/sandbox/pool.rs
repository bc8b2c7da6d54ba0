//! Sandboxes prepared ahead: each a cloned init already in its namespaces
//! and its cgroup, with the mounts that do not depend on the action done,
//! waiting for one. Taking one leaves only the action's own part on the
//! way to running it; the pool is topped up in the background.

use super::Spec;
use super::spawn::{Prepared, StartError};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How long after an action the pool is topped up.
const TOP_UP_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

pub struct Pool {
    ready: Mutex<Vec<Prepared>>,
    /// How many to keep ready; 0 makes each when its action comes.
    size: usize,
    filling: AtomicBool,
}

impl Pool {
    pub fn new(size: usize) -> Pool {
        Pool { ready: Mutex::new(Vec::new()), size, filling: AtomicBool::new(false) }
    }

    /// A prepared sandbox for the runner's usual network: one from the
    /// pool, or one made now when it is empty (on a blocking thread: the
    /// runner's RPC thread goes on meanwhile).
    pub async fn take(&self, spec: &Arc<Spec>) -> Result<Prepared, StartError> {
        let ready = self.ready.lock().pop();
        match ready {
            Some(prepared) => Ok(prepared),
            None => Spec::prepare_apart(spec, spec.settings.allow_network, Vec::new()).await,
        }
    }

    /// Prepares sandboxes in the background until the pool is full. Cloning
    /// copies the runner's page tables and holds its memory map meanwhile:
    /// done while an action starts or runs, it would slow that one down.
    pub fn top_up(pool: &Arc<Pool>, spec: &Arc<Spec>) {
        if pool.size == 0 || pool.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pool, spec) = (pool.clone(), spec.clone());
        tokio::spawn(async move {
            // After the answer to the Run call is on its way.
            tokio::time::sleep(TOP_UP_DELAY).await;
            let _ = tokio::task::spawn_blocking(move || Self::fill(&pool, &spec)).await;
        });
    }

    fn fill(pool: &Pool, spec: &Spec) {
        while pool.ready.lock().len() < pool.size {
            match spec.prepare(spec.settings.allow_network, &[]) {
                Ok(prepared) => pool.ready.lock().push(prepared),
                Err(e) => {
                    tracing::warn!("cannot prepare a sandbox ahead: {e}");
                    break;
                }
            }
        }
        pool.filling.store(false, Ordering::Release);
    }
}
