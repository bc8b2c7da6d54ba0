//! Namespaces the runner keeps and its sandboxes join rather than make:
//! making and tearing down a network namespace is the dearest part of a
//! sandbox (about a millisecond of CPU each way), and a user namespace
//! needs its id maps written. So the runner makes one user namespace, and
//! each network namespace, once made, is lent to one sandbox at a time and
//! taken back when that sandbox's last process is gone.
//!
//! What an action could leave in a network namespace for the next: its
//! sockets close with its processes, and changing the interfaces, routes
//! or firewall needs CAP_NET_ADMIN in the runner's user namespace, which
//! no action has (its capabilities are dropped, and those it gains in a
//! user namespace of its own reach only what that one owns).

use super::sys;
use parking_lot::Mutex;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// At most this many idle network namespaces are kept.
const MAX_IDLE_NETWORKS: usize = 64;

/// The user and group mapped into the runner's user namespace, each to
/// itself. `privileged`: the runner holds CAP_SETUID and CAP_SETGID (for
/// `run_as`), so the mapping need not be of its own ids.
pub struct IdMaps {
    pub uid: u32,
    pub gid: u32,
    pub privileged: bool,
}

pub struct Kept {
    user: OwnedFd,
    idle_networks: Mutex<Vec<OwnedFd>>,
}

/// A network namespace lent to one sandbox, given back when dropped: drop
/// it only once every process of that sandbox is gone.
pub struct NetworkLease {
    namespace: Option<OwnedFd>,
    kept: Arc<Kept>,
}

impl Kept {
    /// Makes the user namespace every sandbox joins.
    pub fn new(maps: &IdMaps) -> std::io::Result<Arc<Kept>> {
        let user = make_user_namespace(maps)?;
        Ok(Arc::new(Kept { user, idle_networks: Mutex::new(Vec::new()) }))
    }

    pub fn user(&self) -> BorrowedFd<'_> {
        self.user.as_fd()
    }

    /// An idle network namespace, if one is kept.
    pub fn lend_network(self: &Arc<Kept>) -> Option<NetworkLease> {
        let namespace = self.idle_networks.lock().pop()?;
        Some(NetworkLease { namespace: Some(namespace), kept: self.clone() })
    }

    /// Keeps the network namespace of the sandbox whose init is `pid` (made
    /// with it, and not yet reaped) to lend it again later.
    pub fn adopt_network(self: &Arc<Kept>, pid: libc::pid_t) -> std::io::Result<NetworkLease> {
        let namespace = OwnedFd::from(File::open(format!("/proc/{pid}/ns/net"))?);
        Ok(NetworkLease { namespace: Some(namespace), kept: self.clone() })
    }
}

impl NetworkLease {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.namespace.as_ref().expect("a lease holds its namespace until dropped").as_fd()
    }

    /// Lets the namespace go rather than lending it again (its sandbox may
    /// not be gone).
    pub fn discard(mut self) {
        self.namespace = None;
    }
}

impl Drop for NetworkLease {
    fn drop(&mut self) {
        if let Some(namespace) = self.namespace.take() {
            let mut idle = self.kept.idle_networks.lock();
            if idle.len() < MAX_IDLE_NETWORKS {
                idle.push(namespace);
            }
        }
    }
}

/// A new user namespace with `maps`, held by a descriptor: made by a child
/// that does nothing else and is killed once the maps are written.
fn make_user_namespace(maps: &IdMaps) -> std::io::Result<OwnedFd> {
    // SAFETY: the child only pauses (a raw system call) until killed.
    let pid = unsafe { sys::clone(libc::CLONE_NEWUSER) };
    if pid == 0 {
        loop {
            unsafe { libc::pause() };
        }
    }
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let namespace = write_id_maps(pid, maps)
        .map_err(|e| std::io::Error::new(e.kind(), format!("mapping the actions' user: {e}")))
        .and_then(|()| File::open(format!("/proc/{pid}/ns/user")));
    let child = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(child, None);
    Ok(OwnedFd::from(namespace?))
}

fn write_id_maps(pid: libc::pid_t, maps: &IdMaps) -> std::io::Result<()> {
    let proc = format!("/proc/{pid}");
    if !maps.privileged {
        std::fs::write(format!("{proc}/setgroups"), "deny")?;
    }
    std::fs::write(format!("{proc}/uid_map"), format!("{0} {0} 1\n", maps.uid))?;
    std::fs::write(format!("{proc}/gid_map"), format!("{0} {0} 1\n", maps.gid))
}
