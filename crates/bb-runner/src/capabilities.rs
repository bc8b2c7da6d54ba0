//! Dropping Linux capabilities at start. Capabilities are per thread, so
//! this runs before any other thread exists (before the async runtime),
//! and every thread and action inherits the result.

use caps::{CapSet, CapsHashSet};

/// What the runner holds after `drop_all_but`.
#[derive(Debug)]
pub struct Held {
    pub effective: CapsHashSet,
    pub bounding: CapsHashSet,
    /// The bounding set could not be emptied (no CAP_SETPCAP).
    pub bounding_kept: bool,
}

/// Drops every capability not in `keep` from the bounding, permitted,
/// effective, inheritable and ambient sets, and sets `no_new_privs` so no
/// action can gain privileges through setuid binaries or file capabilities.
pub fn drop_all_but(keep: &CapsHashSet) -> Result<Held, caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    // The bounding set first: shrinking it needs CAP_SETPCAP, which may
    // itself be on the way out.
    let mut bounding_kept = false;
    for cap in caps::read(None, CapSet::Bounding)? {
        if !keep.contains(&cap) && caps::drop(None, CapSet::Bounding, cap).is_err() {
            bounding_kept = true;
            break;
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let kept: CapsHashSet = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    // SAFETY: prctl with constant arguments.
    let no_new_privs = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if no_new_privs != 0 {
        return Err(caps::errors::CapsError::from(format!(
            "cannot set no_new_privs: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(Held {
        effective: caps::read(None, CapSet::Effective)?,
        bounding: caps::read(None, CapSet::Bounding)?,
        bounding_kept,
    })
}

pub fn names(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(|c| c.to_string()).collect();
    names.sort();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}
