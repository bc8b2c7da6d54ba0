//! The zygote: a small process forked from the runner before it serves
//! anything (once it is in its own cgroup), which clones each sandbox's
//! init (through the launcher, [`child::launch`]) and reaps it.
//!
//! Why not clone init from the runner: a fork write-protects all of the
//! parent's memory, and while init lives, each page the runner writes is
//! copied (a fault, and a TLB shootdown to every core running one of its
//! threads); forking also holds the runner's memory map while the page
//! tables are copied, stalling its other threads. The zygote's memory is
//! what the runner had before serving anything, and the zygote writes
//! almost none of it. It used to fork a process per sandbox to clone and
//! reap its init; cloning and reaping every init itself saves a fork and
//! an exit per action.
//!
//! One message per sandbox, on a socket only the runner holds: where the
//! runner maps the plan's memfd (a slot of the [`region`]; the zygote maps
//! it at the same address while it clones init, so the plan's pointers
//! hold), the plan, the clone flags, and the descriptors the plan names,
//! each moved to the number it has in the runner. Among them is the
//! sandbox's own socket, on which the zygote tells the runner init's pid
//! and, once it is reaped, its end. Like [`child`], the zygote only makes
//! raw system calls: the runner may have had threads when it forked it.

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

    /// Asks the zygote to clone init with `flags` on the plan `generic` in
    /// `arena`, passing it `fds` (those the plan names).
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

/// Serves the runner until it closes its end: starts each sandbox's init
/// and reaps it. Never returns.
unsafe fn zygote_main(socket: RawFd) -> ! {
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"bb-zygote".as_ptr(), 0, 0, 0);
        sys::close_all_but(&[socket]);
    }
    // SIGCHLD is read from a descriptor, between requests, not handled.
    let children = unsafe { child_signals() };
    if children < 0 {
        unsafe { libc::_exit(127) };
    }
    let mut zygote = ZygoteState { socket, children, inits: Inits::new() };
    loop {
        let mut ready = [
            libc::pollfd { fd: zygote.socket, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: zygote.children, events: libc::POLLIN, revents: 0 },
        ];
        if unsafe { libc::poll(ready.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if ready[1].revents != 0 {
            unsafe { zygote.reap() };
        }
        if ready[0].revents != 0 {
            unsafe { zygote.serve_one() };
        }
    }
}

/// Blocks SIGCHLD and returns a signalfd for it (-1 if that failed).
unsafe fn child_signals() -> RawFd {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    }
}

/// At most this many inits are started and not yet reaped; past it a
/// sandbox is refused (its runner socket closed).
const MAX_INITS: usize = 4 * region::SLOTS;

/// The inits the zygote started: each one's pid, and the socket its
/// runner learns its end on.
struct Inits {
    pids: [libc::pid_t; MAX_INITS],
    sockets: [RawFd; MAX_INITS],
    len: usize,
}

impl Inits {
    fn new() -> Inits {
        Inits { pids: [0; MAX_INITS], sockets: [-1; MAX_INITS], len: 0 }
    }

    /// The socket of `pid`'s runner, no longer kept.
    fn remove(&mut self, pid: libc::pid_t) -> Option<RawFd> {
        let index = self.pids[..self.len].iter().position(|&p| p == pid)?;
        let socket = self.sockets[index];
        self.len -= 1;
        self.pids[index] = self.pids[self.len];
        self.sockets[index] = self.sockets[self.len];
        Some(socket)
    }
}

/// What the zygote holds: its socket to the runner, SIGCHLD as a
/// descriptor, and the inits it has yet to reap.
struct ZygoteState {
    socket: RawFd,
    children: RawFd,
    inits: Inits,
}

impl ZygoteState {
    /// Reaps every child that ended, and tells the runner of each init its
    /// wait status and usage (the action's included).
    unsafe fn reap(&mut self) {
        let mut info = std::mem::MaybeUninit::<libc::signalfd_siginfo>::uninit();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        while unsafe { libc::read(self.children, info.as_mut_ptr().cast(), size) } == size as isize {}
        loop {
            let mut report = sys::StatusReport { status: 0, rusage: unsafe { std::mem::zeroed() } };
            let pid = unsafe { libc::wait4(-1, &mut report.status, libc::WNOHANG, &mut report.rusage) };
            if pid <= 0 {
                return;
            }
            if let Some(socket) = self.inits.remove(pid) {
                unsafe {
                    let length = std::mem::size_of::<sys::StatusReport>();
                    libc::send(socket, (&raw const report).cast(), length, libc::MSG_NOSIGNAL);
                    libc::close(socket);
                }
            }
        }
    }

    /// One request: a sandbox's init started, or the request refused.
    unsafe fn serve_one(&mut self) {
        let mut request = std::mem::MaybeUninit::<Request>::zeroed();
        let mut fds = [-1; MAX_FDS + 1];
        let count = match unsafe { receive(self.socket, request.as_mut_ptr(), &mut fds) } {
            Received::Gone => unsafe { libc::_exit(0) },
            Received::Ignored => return,
            Received::Request(count) => count,
        };
        // SAFETY: filled in whole by receive.
        let request = unsafe { request.assume_init() };
        let fds = &fds[..count];
        if count != request.count as usize + 1
            || self.inits.len == MAX_INITS
            || !unsafe { self.start(&request, fds) }
        {
            for &fd in fds {
                unsafe { libc::close(fd) };
            }
        }
    }

    /// Maps the plan, puts the descriptors where the plan says, starts init
    /// through the launcher, tells the runner init's pid with a pidfd of it,
    /// and keeps the socket to tell it init's end. False (nothing done, the
    /// descriptors still open) if the request cannot be served.
    unsafe fn start(&mut self, request: &Request, fds: &[RawFd]) -> bool {
        let targets = &request.targets[..request.count as usize];
        // Only over a slot of the reservation: nothing the zygote needs.
        let Some(region) = region::existing().filter(|region| region.holds_slot(request.base)) else {
            return false;
        };
        if !unsafe { self.clear_of(targets) } {
            return false;
        }
        let mapped = unsafe {
            libc::mmap(
                request.base as *mut libc::c_void,
                ARENA_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_NORESERVE,
                fds[0],
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return false;
        }
        unsafe { libc::close(fds[0]) };
        if !unsafe { move_to_targets(&fds[1..], targets) } {
            unsafe { region.reserve_again(request.base) };
            return true;
        }
        let generic = request.generic as *const Generic;
        // Read while the plan is mapped here.
        let reaper = unsafe { (*generic).reaper_fd };
        let launched = unsafe { child::launch(generic, request.flags) };
        if launched.launcher > 0 {
            while unsafe { libc::waitpid(launched.launcher, std::ptr::null_mut(), 0) } < 0 && interrupted() {}
        }
        // The plan stays mapped in init only.
        unsafe { region.reserve_again(request.base) };
        // The runner's descriptors are init's now, but the socket its end
        // is told on (if it started).
        for &target in targets.iter().filter(|&&t| t != reaper || launched.init <= 0) {
            unsafe { libc::close(target) };
        }
        if launched.init <= 0 {
            return true;
        }
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, launched.init, 0) } as RawFd;
        if pidfd < 0 || !unsafe { send_launched(reaper, launched.init, launched.in_cgroup, pidfd) } {
            unsafe { libc::kill(launched.init, libc::SIGKILL) };
        }
        unsafe { libc::close(pidfd) };
        let index = self.inits.len;
        self.inits.pids[index] = launched.init;
        self.inits.sockets[index] = reaper;
        self.inits.len += 1;
        true
    }

    /// Moves the zygote's own descriptors off `targets`, where the runner's
    /// are about to be put. False if one cannot be moved.
    unsafe fn clear_of(&mut self, targets: &[RawFd]) -> bool {
        let above = targets.iter().copied().max().unwrap_or(0) + 1;
        let owned = [&mut self.socket, &mut self.children]
            .into_iter()
            .chain(self.inits.sockets[..self.inits.len].iter_mut());
        for fd in owned {
            if targets.contains(fd) {
                let moved = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above) };
                if moved < 0 {
                    return false;
                }
                unsafe { libc::close(*fd) };
                *fd = moved;
            }
        }
        true
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

fn interrupted() -> bool {
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
}

/// Moves each of `fds` to the number at the same place in `targets`,
/// close-on-exec like every descriptor of the runner: first above all the
/// targets, then onto them. `fds` are consumed: if a move fails (false),
/// none of them is left open, at any number.
unsafe fn move_to_targets(fds: &[RawFd], targets: &[RawFd]) -> bool {
    let above = targets.iter().copied().max().unwrap_or(0) + 1;
    let mut high = [-1; MAX_FDS];
    let mut moved = true;
    for (index, &fd) in fds.iter().enumerate() {
        if moved {
            high[index] = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
            moved = high[index] >= 0;
        }
        unsafe { libc::close(fd) };
    }
    for (&from, &to) in high.iter().zip(targets).filter(|(from, _)| **from >= 0) {
        if moved && unsafe { libc::dup3(from, to, libc::O_CLOEXEC) } < 0 {
            moved = false;
        }
        unsafe { libc::close(from) };
    }
    if !moved {
        // Nothing of the zygote's is at a target number (see clear_of).
        for &to in targets {
            unsafe { libc::close(to) };
        }
    }
    moved
}

/// Init's pid, whether it is in its v2 cgroup, and a pidfd of it.
unsafe fn send_launched(reaper: RawFd, init: libc::pid_t, in_cgroup: bool, pidfd: RawFd) -> bool {
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
        libc::sendmsg(reaper, &message, libc::MSG_NOSIGNAL) == 8
    }
}
