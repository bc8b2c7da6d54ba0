//! Directory handles for trees that someone else controls, such as an
//! action's build directory after the action ran. Everything beneath a
//! handle is reached with `*at` system calls relative to it, and no symlink
//! is ever followed: a path is resolved with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` where the kernel has it, else with `O_NOFOLLOW` at
//! every component. Where a directory or a regular file is expected and
//! something else is found (a symlink, a FIFO, a device node), the call
//! fails and says what it found.

use crate::path::RelativePath;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a directory entry is, as `lstat` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    /// FIFOs, sockets, device nodes.
    Other,
}

impl Kind {
    fn of(stat: &FileStat) -> Kind {
        match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Directory,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Directory => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Other => "a FIFO, socket or device node",
        }
    }
}

/// An entry's metadata, never following a symlink.
#[derive(Clone, Copy, Debug)]
pub struct Metadata {
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub size: u64,
    pub uid: u32,
    device: u64,
    inode: u64,
}

impl Metadata {
    fn from_stat(stat: &FileStat) -> Self {
        Metadata {
            kind: Kind::of(stat),
            mode: stat.st_mode & 0o7777,
            size: stat.st_size as u64,
            uid: stat.st_uid,
            device: stat.st_dev,
            inode: stat.st_ino,
        }
    }

    pub fn is_executable(&self) -> bool {
        self.mode & 0o111 != 0
    }

    fn same_inode(&self, other: &Metadata) -> bool {
        (self.device, self.inode) == (other.device, other.inode)
    }
}

fn unexpected(name: &str, found: Kind, wanted: Kind) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{name:?} is {}, not {}", found.describe(), wanted.describe()),
    )
}

/// Whether `openat2` works here (Linux 5.6 and later, unless a seccomp
/// filter hides it); found out on first use.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// A handle on a directory. Cheap to hold; all access beneath it goes
/// through it.
#[derive(Debug)]
pub struct Directory {
    fd: OwnedFd,
}

impl AsFd for Directory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Directory {
    /// Opens a directory the caller trusts by path (its own build directory,
    /// a directory a user named on the command line).
    pub fn open(path: &Path) -> io::Result<Directory> {
        let fd =
            nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Directory { fd })
    }

    /// A second handle on the same directory.
    pub fn try_clone(&self) -> io::Result<Directory> {
        Ok(Directory { fd: self.fd.try_clone()? })
    }

    /// The directory at `path` beneath this one; no component may be a
    /// symlink. An error names the component that is not a directory.
    pub fn open_dir(&self, path: &RelativePath) -> io::Result<Directory> {
        if path.is_empty() {
            return self.try_clone();
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if !OPENAT2_MISSING.load(Ordering::Relaxed) {
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
            match openat2(&self.fd, path.to_string().as_str(), how) {
                Ok(fd) => return Ok(Directory { fd }),
                Err(Errno::ENOSYS) | Err(Errno::EPERM) => OPENAT2_MISSING.store(true, Ordering::Relaxed),
                Err(Errno::ENOENT) => return Err(io::Error::from(Errno::ENOENT)),
                // Say which component was wrong.
                Err(_) => {}
            }
        }
        let mut directory = self.open_child(&path.components()[0])?;
        for component in &path.components()[1..] {
            directory = directory.open_child(component)?;
        }
        Ok(directory)
    }

    /// The subdirectory `name`, which must be a directory (not a symlink).
    pub fn open_child(&self, name: &str) -> io::Result<Directory> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => Ok(Directory { fd }),
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                Err(unexpected(name, self.metadata(name)?.kind, Kind::Directory))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The entry `name`, not following it if it is a symlink.
    pub fn metadata(&self, name: &str) -> io::Result<Metadata> {
        Ok(Metadata::from_stat(&fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?))
    }

    /// This directory's own metadata.
    pub fn own_metadata(&self) -> io::Result<Metadata> {
        Ok(Metadata::from_stat(&fstat(&self.fd)?))
    }

    /// Opens the regular file `name` for reading. Anything else fails
    /// without being opened (a FIFO would block, a device could act).
    pub fn open_regular(&self, name: &str) -> io::Result<(File, Metadata)> {
        let before = self.metadata(name)?;
        if before.kind != Kind::File {
            return Err(unexpected(name, before.kind, Kind::File));
        }
        let flags =
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, name, flags, Mode::empty())?;
        let opened = Metadata::from_stat(&fstat(&fd)?);
        if opened.kind != Kind::File || !opened.same_inode(&before) {
            return Err(io::Error::other(format!("{name:?} was replaced while it was opened")));
        }
        Ok((File::from(fd), opened))
    }

    /// Opens the regular file at `path` beneath this directory.
    pub fn open_file(&self, path: &RelativePath) -> io::Result<(File, Metadata)> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the empty path names no file"))?;
        self.open_dir(&path.parent())?.open_regular(name)
    }

    /// Creates (or truncates) the regular file `name` for writing; fails if
    /// it exists as anything but a regular file.
    pub fn create_regular(&self, name: &str, mode: u32) -> io::Result<File> {
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_TRUNC
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::from_bits_truncate(mode)) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) | Err(Errno::ENXIO) | Err(Errno::EISDIR) => {
                return Err(unexpected(name, self.metadata(name)?.kind, Kind::File));
            }
            Err(e) => return Err(e.into()),
        };
        let kind = Kind::of(&fstat(&fd)?);
        if kind != Kind::File {
            return Err(unexpected(name, kind, Kind::File));
        }
        Ok(File::from(fd))
    }

    /// The target of the symlink `name`.
    pub fn read_link(&self, name: &str) -> io::Result<OsString> {
        Ok(readlinkat(&self.fd, name)?)
    }

    /// The names in this directory, `.` and `..` left out.
    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        use std::os::unix::ffi::OsStrExt;
        let mut listing = nix::dir::Dir::openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(std::ffi::OsStr::from_bytes(&name).to_os_string());
            }
        }
        Ok(names)
    }

    /// Creates the subdirectory `name` with exactly `mode` (no umask) and
    /// returns it.
    pub fn create_dir(&self, name: &str, mode: u32) -> io::Result<Directory> {
        mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700))?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, name, flags, Mode::empty())?;
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))?;
        Ok(Directory { fd })
    }

    /// Sets this directory's permission bits.
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        chmod_opened(&self.fd, mode)
    }

    /// Sets the permission bits of the entry `name`, which must be a regular
    /// file or a directory (a symlink is never followed).
    pub fn set_entry_mode(&self, name: &str, mode: u32) -> io::Result<()> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, name, flags, Mode::empty())?;
        match Kind::of(&fstat(&fd)?) {
            Kind::File | Kind::Directory => chmod_opened(&fd, mode),
            kind => Err(unexpected(name, kind, Kind::File)),
        }
    }

    /// Creates the symlink `name` pointing at `target`, exactly as given.
    pub fn symlink(&self, target: &str, name: &str) -> io::Result<()> {
        Ok(symlinkat(target, &self.fd, name)?)
    }

    /// Hardlinks `source` (a path the caller trusts) as `name`.
    pub fn hard_link_from(&self, source: &Path, name: &str) -> io::Result<()> {
        Ok(linkat(nix::fcntl::AT_FDCWD, source, &self.fd, name, AtFlags::empty())?)
    }

    /// Removes the entry `name`; a directory with all it holds.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        if self.metadata(name)?.kind != Kind::Directory {
            return Ok(unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir)?);
        }
        let child = self.open_child(name)?;
        // The owner may have locked it (chmod 0); unlock it to empty it.
        let _ = child.set_mode(0o700);
        child.remove_contents()?;
        Ok(unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir)?)
    }

    /// Removes everything inside this directory, keeping it.
    pub fn remove_contents(&self) -> io::Result<()> {
        for name in self.entries()? {
            let name = name.to_string_lossy().into_owned();
            self.remove(&name)?;
        }
        Ok(())
    }
}

/// chmod of an opened inode. `fchmod` refuses `O_PATH` descriptors, so
/// this goes through the descriptor's entry in /proc, which names the
/// inode itself, never a path that could have changed.
fn chmod_opened(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    match nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode)) {
        Err(Errno::EBADF) => {
            use std::os::unix::fs::PermissionsExt;
            let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            std::fs::set_permissions(proc_path, std::fs::Permissions::from_mode(mode))
        }
        result => Ok(result?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn rel(path: &str) -> RelativePath {
        RelativePath::parse("p", path).unwrap()
    }

    fn message(error: io::Error) -> String {
        error.to_string()
    }

    #[test]
    fn reaches_files_beneath_and_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/b/f"), "inside").unwrap();
        std::fs::write(base.join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink("../..", base.join("a/up")).unwrap();
        std::os::unix::fs::symlink("../secret", base.join("a/link")).unwrap();
        let root = Directory::open(&base.join("a")).unwrap();

        let (mut file, metadata) = root.open_file(&rel("b/f")).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), metadata.kind, metadata.size), ("inside", Kind::File, 6));

        assert!(message(root.open_file(&rel("link")).unwrap_err()).contains("is a symlink"));
        assert!(message(root.open_dir(&rel("up")).unwrap_err()).contains("is a symlink"));
        assert!(root.open_file(&rel("up/secret")).is_err());
        assert_eq!(root.read_link("link").unwrap(), "../secret");
        assert_eq!(root.open_dir(&rel("missing/x")).unwrap_err().kind(), io::ErrorKind::NotFound);
        let mut names = root.entries().unwrap();
        names.sort();
        assert_eq!(names, ["b", "link", "up"]);
    }

    #[test]
    fn refuses_fifos_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o666)).unwrap();
        let root = Directory::open(dir.path()).unwrap();
        assert!(message(root.open_regular("fifo").unwrap_err()).contains("FIFO"));
        assert!(message(root.create_regular("fifo", 0o644).unwrap_err()).contains("FIFO"));
        std::fs::write(dir.path().join("target"), "kept").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link")).unwrap();
        assert!(message(root.create_regular("link", 0o644).unwrap_err()).contains("symlink"));
        assert_eq!(std::fs::read_to_string(dir.path().join("target")).unwrap(), "kept", "not truncated");
    }

    /// Actions cannot make device nodes (the runner drops CAP_MKNOD), but
    /// a runner that is not ours might let them: /dev/zero is never read.
    #[test]
    fn refuses_device_nodes() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let zero = nix::sys::stat::makedev(1, 5);
        nix::sys::stat::mknod(
            &dir.path().join("zero"),
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            zero,
        )
        .unwrap();
        let root = Directory::open(dir.path()).unwrap();
        assert!(message(root.open_regular("zero").unwrap_err()).contains("device"));
        assert!(message(root.create_regular("zero", 0o644).unwrap_err()).contains("device"));
    }

    #[test]
    fn creates_with_exact_modes_and_removes_locked_trees() {
        let dir = tempfile::tempdir().unwrap();
        let root = Directory::open(dir.path()).unwrap();
        let sub = root.create_dir("sub", 0o777).unwrap();
        assert_eq!(root.metadata("sub").unwrap().mode, 0o777);
        sub.create_regular("f", 0o600).unwrap();
        sub.symlink("/etc", "etc").unwrap();
        let locked = sub.create_dir("locked", 0o700).unwrap();
        locked.create_regular("g", 0o600).unwrap();
        locked.set_mode(0).unwrap();
        sub.set_entry_mode("f", 0o644).unwrap();
        assert_eq!(sub.metadata("f").unwrap().mode, 0o644);
        assert!(sub.set_entry_mode("etc", 0o777).is_err(), "a symlink is not followed");
        root.remove("sub").unwrap();
        assert!(root.entries().unwrap().is_empty());
        assert!(Path::new("/etc/passwd").exists());
    }
}
