//! The zygote: a small process forked from the runner before it serves
//! anything (once it is in its own cgroup), which forks a keeper for each
//! sandbox. The keeper clones the sandbox's init (through the launcher,
//! [`child::launch`]) and reaps it.
//!
//! Why not clone init from the runner: a fork write-protects all of the
//! parent's memory, and while init lives, each page the runner writes is
//! copied (a fault, and a TLB shootdown to every core running one of its
//! threads); forking also holds the runner's memory map while the page
//! tables are copied, stalling its other threads. The zygote's memory is
//! what the runner had before serving anything, and the zygote writes
//! almost none of it.
//!
//! One message per sandbox, on a socket only the runner holds: where the
//! runner maps the plan's memfd (a slot of the [`region`]; the keeper maps
//! it at the same address, so the plan's pointers hold), the plan, the clone flags, and the
//! descriptors the plan names, each moved to the number it has in the
//! runner. Like [`child`], the zygote and the keeper only make raw system
//! calls: the runner may have had threads when it forked them.

use super::child;
use super::plan::{ARENA_SIZE, Arena, Generic};
use super::{region, sys};
use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair};
use parking_lot::Mutex;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// At most this many descriptors go with a sandbox (SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 32;

/// What the runner asks the zygote for, as sent.
#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    /// Where the runner maps the plan's memfd (the first descriptor sent).
    base: usize,
    /// The plan, in that mapping.
    generic: usize,
    flags: libc::c_int,
    /// How many descriptors follow the memfd, and their runner's numbers.
    count: u32,
    targets: [RawFd; MAX_FDS],
}

/// The runner's end of its zygote; a new zygote is forked if it is gone.
pub struct Zygote {
    current: Mutex<Forked>,
}

/// A zygote: the runner's end of its socket, and its pid (to reap).
struct Forked {
    /// Only taken when dropped.
    socket: Option<OwnedFd>,
    pid: libc::pid_t,
}

impl Zygote {
    /// Forks the zygote: best while the runner is small and has one thread
    /// (the zygote is a copy of it), correct at any time.
    pub fn start() -> std::io::Result<Zygote> {
        // Reserved first, so the zygote has it too.
        region::region(ARENA_SIZE)?;
        Ok(Zygote { current: Mutex::new(fork_zygote()?) })
    }

    /// Asks for a keeper to clone init with `flags` on the plan `generic`
    /// in `arena`, passing it `fds` (those the plan names).
    pub fn launch(
        &self,
        arena: &Arena,
        generic: *const Generic,
        flags: libc::c_int,
        fds: &[RawFd],
    ) -> std::io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(std::io::Error::other(format!("a sandbox takes at most {MAX_FDS} descriptors")));
        }
        let (memfd, base) = arena.mapping();
        let mut request = Request {
            base,
            generic: generic as usize,
            flags,
            count: fds.len() as u32,
            targets: [-1; MAX_FDS],
        };
        request.targets[..fds.len()].copy_from_slice(fds);
        let mut sent = vec![memfd.as_raw_fd()];
        sent.extend_from_slice(fds);
        // SAFETY: Request is plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const request).cast::<u8>(), std::mem::size_of::<Request>())
        };
        let mut zygote = self.current.lock();
        let send = |zygote: &Forked| {
            sendmsg::<()>(
                zygote.socket.as_ref().map_or(-1, |s| s.as_raw_fd()),
                &[IoSlice::new(bytes)],
                &[ControlMessage::ScmRights(&sent)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
        };
        if let Err(e) = send(&zygote) {
            if !matches!(e, Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) {
                return Err(e.into());
            }
            // The zygote is gone (killed): a new one, once.
            tracing::warn!("the sandbox zygote is gone ({e}); forking a new one");
            *zygote = fork_zygote()?;
            send(&zygote).map_err(std::io::Error::from)?;
        }
        Ok(())
    }
}

impl Drop for Forked {
    /// The zygote exits once its socket is closed; then it is reaped.
    fn drop(&mut self) {
        drop(self.socket.take());
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
    }
}

fn fork_zygote() -> std::io::Result<Forked> {
    let (runner_end, zygote_end) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: the child only makes raw system calls (zygote_main).
    let pid = unsafe { sys::clone(0) };
    if pid == 0 {
        unsafe { zygote_main(zygote_end.as_raw_fd()) }
    }
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Forked { socket: Some(runner_end), pid })
}

/// Room for the memfd and MAX_FDS descriptors, aligned for cmsghdr.
const CONTROL_WORDS: usize = (MAX_FDS + 1).div_ceil(2) + 4;

/// Serves the runner until it closes its end. Never returns.
unsafe fn zygote_main(socket: RawFd) -> ! {
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"bb-zygote".as_ptr(), 0, 0, 0);
        sys::close_all_but(&[socket]);
        // Keepers are reaped as they end (their CPU, and their inits',
        // then counts as the zygote's children's).
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = reap_keepers as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());
    }
    loop {
        let mut request = std::mem::MaybeUninit::<Request>::zeroed();
        let mut fds = [-1; MAX_FDS + 1];
        let received = unsafe { receive(socket, request.as_mut_ptr(), &mut fds) };
        let count = match received {
            Received::Gone => unsafe { libc::_exit(0) },
            Received::Ignored => continue,
            Received::Request(count) => count,
        };
        // SAFETY: filled in whole by receive.
        let request = unsafe { request.assume_init() };
        let fds = &fds[..count];
        if count == request.count as usize + 1 && unsafe { sys::clone(0) } == 0 {
            unsafe { keeper_main(socket, &request, fds) }
        }
        for &fd in fds {
            unsafe { libc::close(fd) };
        }
    }
}

/// The zygote's SIGCHLD handler: reaps every keeper that ended.
extern "C" fn reap_keepers(_: libc::c_int) {
    // SAFETY: errno is saved and restored around async-signal-safe calls.
    unsafe {
        let errno = *libc::__errno_location();
        while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
        *libc::__errno_location() = errno;
    }
}

enum Received {
    Request(usize),
    /// Malformed: what came with it is closed.
    Ignored,
    Gone,
}

/// One request and the descriptors that came with it.
unsafe fn receive(socket: RawFd, request: *mut Request, fds: &mut [RawFd; MAX_FDS + 1]) -> Received {
    let mut iov = libc::iovec { iov_base: request.cast(), iov_len: std::mem::size_of::<Request>() };
    let mut control = [0u64; CONTROL_WORDS];
    let mut message = sys::message_header(&mut iov, &mut control);
    let length = unsafe { libc::recvmsg(socket, &mut message, libc::MSG_CMSG_CLOEXEC) };
    if length == 0 {
        return Received::Gone;
    }
    if length < 0 {
        let interrupted = std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
        return if interrupted { Received::Ignored } else { Received::Gone };
    }
    let mut count = 0;
    let mut header = unsafe { libc::CMSG_FIRSTHDR(&message) };
    while !header.is_null() {
        let cmsg = unsafe { &*header };
        if cmsg.cmsg_level == libc::SOL_SOCKET && cmsg.cmsg_type == libc::SCM_RIGHTS {
            let data = unsafe { libc::CMSG_DATA(header) }.cast::<RawFd>();
            let bytes = cmsg.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            for index in 0..bytes / std::mem::size_of::<RawFd>() {
                let fd = unsafe { data.add(index).read_unaligned() };
                match fds.get_mut(count) {
                    Some(slot) => *slot = fd,
                    None => unsafe {
                        libc::close(fd);
                    },
                }
                count += 1;
            }
        }
        header = unsafe { libc::CMSG_NXTHDR(&message, header) };
    }
    let whole =
        length as usize == std::mem::size_of::<Request>() && message.msg_flags & libc::MSG_CTRUNC == 0;
    if !whole || count > fds.len() {
        for &fd in &fds[..count.min(fds.len())] {
            unsafe { libc::close(fd) };
        }
        return Received::Ignored;
    }
    Received::Request(count)
}

/// One sandbox's keeper: maps the plan, puts the descriptors where the plan
/// says, starts init through the launcher, tells the runner init's pid
/// with a pidfd of it, then reaps it and tells its wait status. Never
/// returns.
unsafe fn keeper_main(zygote: RawFd, request: &Request, fds: &[RawFd]) -> ! {
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"bb-keeper".as_ptr(), 0, 0, 0);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::close(zygote);
        // Only over a slot of the reservation: nothing the keeper needs.
        if !region::existing().is_some_and(|region| region.holds_slot(request.base)) {
            libc::_exit(127);
        }
        let mapped = libc::mmap(
            request.base as *mut libc::c_void,
            ARENA_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_NORESERVE,
            fds[0],
            0,
        );
        if mapped == libc::MAP_FAILED {
            libc::_exit(127);
        }
        libc::close(fds[0]);
        let targets = &request.targets[..request.count as usize];
        if !move_to_targets(&fds[1..], targets) {
            libc::_exit(127);
        }
        let generic = request.generic as *const Generic;
        let keeper = (*generic).keeper_fd;
        let launched = child::launch(generic, request.flags);
        if launched.launcher > 0 {
            while libc::waitpid(launched.launcher, std::ptr::null_mut(), 0) < 0 && interrupted() {}
        }
        if launched.init <= 0 {
            libc::_exit(0);
        }
        let pidfd = libc::syscall(libc::SYS_pidfd_open, launched.init, 0) as RawFd;
        let mut keep = [keeper, pidfd];
        keep.sort_unstable();
        sys::close_all_but(&keep);
        if pidfd < 0 || !send_launched(keeper, launched.init, launched.in_cgroup, pidfd) {
            libc::kill(launched.init, libc::SIGKILL);
        }
        libc::close(pidfd);
        let mut report = sys::StatusReport { status: 0, rusage: std::mem::zeroed() };
        while libc::wait4(launched.init, &mut report.status, 0, &mut report.rusage) < 0 && interrupted() {}
        libc::write(keeper, (&raw const report).cast(), std::mem::size_of::<sys::StatusReport>());
        libc::_exit(0)
    }
}

fn interrupted() -> bool {
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
}

/// Moves each of `fds` to the number at the same place in `targets`,
/// close-on-exec like every descriptor of the runner: first above all the
/// targets, then onto them. False if a move failed.
unsafe fn move_to_targets(fds: &[RawFd], targets: &[RawFd]) -> bool {
    let above = targets.iter().copied().max().unwrap_or(0) + 1;
    let mut high = [-1; MAX_FDS];
    for (index, &fd) in fds.iter().enumerate() {
        high[index] = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
        unsafe { libc::close(fd) };
        if high[index] < 0 {
            return false;
        }
    }
    for (&from, &to) in high.iter().zip(targets) {
        if unsafe { libc::dup3(from, to, libc::O_CLOEXEC) } < 0 {
            return false;
        }
        unsafe { libc::close(from) };
    }
    true
}

/// Init's pid, whether it is in its v2 cgroup, and a pidfd of it.
unsafe fn send_launched(keeper: RawFd, init: libc::pid_t, in_cgroup: bool, pidfd: RawFd) -> bool {
    let told = [init, i32::from(in_cgroup)];
    let mut iov = libc::iovec { iov_base: told.as_ptr() as *mut libc::c_void, iov_len: 8 };
    let mut control = [0u64; 4];
    let mut message = sys::message_header(&mut iov, &mut control);
    message.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        libc::CMSG_DATA(header).cast::<RawFd>().write_unaligned(pidfd);
        libc::sendmsg(keeper, &message, libc::MSG_NOSIGNAL) == 8
    }
}
