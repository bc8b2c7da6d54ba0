//! The address space the plans' arenas are mapped in: one reservation,
//! made before the zygote is forked and never released, cut into slots.
//!
//! The zygote maps a plan at the address the runner has it at while it
//! clones the plan's init ([`super::zygote`]), replacing whatever it has
//! there, then reserves the slot again. Inside this reservation that is
//! only ever the reservation itself, or an old arena the runner had when
//! the zygote was forked: never the zygote's stack, its thread's TLS or
//! its code, which a fork from a thread whose stack the runner later freed
//! could otherwise have under a new arena.

use parking_lot::Mutex;
use std::sync::OnceLock;

/// How many arenas can be mapped at once: those of the sandboxes prepared
/// ahead, and of the one starting (starts are one at a time).
pub const SLOTS: usize = 256;

pub struct Region {
    base: usize,
    slot_size: usize,
    free: Mutex<Vec<usize>>,
}

static REGION: OnceLock<Result<Region, i32>> = OnceLock::new();

/// The reservation for slots of `slot_size` bytes (made by the first call;
/// every call must pass the same size).
pub fn region(slot_size: usize) -> std::io::Result<&'static Region> {
    let made = REGION.get_or_init(|| {
        // SAFETY: a new reservation, inaccessible until slots are mapped.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SLOTS * slot_size,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOMEM));
        }
        Ok(Region { base: base as usize, slot_size, free: Mutex::new((0..SLOTS).rev().collect()) })
    });
    match made {
        Ok(region) => Ok(region),
        Err(errno) => Err(std::io::Error::other(format!(
            "reserving {} GiB of address space for the sandboxes' plans: {}",
            (SLOTS * slot_size) >> 30,
            std::io::Error::from_raw_os_error(*errno)
        ))),
    }
}

impl Region {
    /// The address of a free slot, for the caller to map over.
    pub fn take(&self) -> std::io::Result<usize> {
        let slot = self.free.lock().pop().ok_or_else(|| {
            std::io::Error::other(format!("more than {SLOTS} sandboxes are prepared or starting at once"))
        })?;
        Ok(self.base + slot * self.slot_size)
    }

    /// Reserves the slot at `address` again, and frees it.
    pub fn give_back(&self, address: usize) {
        // SAFETY: replaces the caller's mapping of this slot only.
        // Were it not reserved again, something else could be mapped there.
        if unsafe { self.reserve_again(address) } {
            self.free.lock().push((address - self.base) / self.slot_size);
        }
    }

    /// Replaces whatever is mapped in the slot at `address` with the
    /// reservation; false if that failed. A raw system call (the zygote
    /// calls it).
    ///
    /// # Safety
    /// Nothing of the caller's may be in use in that slot.
    pub unsafe fn reserve_again(&self, address: usize) -> bool {
        let reserved = unsafe {
            libc::mmap(
                address as *mut libc::c_void,
                self.slot_size,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        reserved != libc::MAP_FAILED
    }

    /// Whether `address` is the start of one of the slots.
    pub fn holds_slot(&self, address: usize) -> bool {
        address >= self.base
            && address < self.base + SLOTS * self.slot_size
            && (address - self.base).is_multiple_of(self.slot_size)
    }
}

/// The reservation, if made: for the zygote, which must not make it.
pub fn existing() -> Option<&'static Region> {
    REGION.get().and_then(|made| made.as_ref().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_and_come_back() {
        let size = super::super::plan::ARENA_SIZE;
        let region = region(size).unwrap();
        let (a, b) = (region.take().unwrap(), region.take().unwrap());
        assert_ne!(a, b);
        assert!(region.holds_slot(a) && region.holds_slot(b));
        assert!(!region.holds_slot(a + 4096), "not a slot's start");
        assert!(!region.holds_slot(region.base + SLOTS * size), "past the end");
        region.give_back(a);
        region.give_back(b);
        let free = region.free.lock();
        assert!(free.contains(&((a - region.base) / size)) && free.contains(&((b - region.base) / size)));
    }
}
