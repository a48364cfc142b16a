//! `isolation: "mount-namespace"`: the agent's view of the filesystem,
//! built in the forked child before exec.
//!
//! What the agent sees:
//!
//! - every mount read-only, `nosuid` and `nodev` (one recursive
//!   `mount_setattr`, so submounts are included and none is missed);
//! - its cell at its own path, read-only, with `workspace/`, `bus/` and
//!   `.lazarus/heartbeats/` bound read-write on top: `cell.json`,
//!   `.lazarus/state.json`, `logs/` and `checkpoints/` cannot be changed,
//!   so the agent can neither lower its own isolation nor forge events;
//! - the cells root empty but for its own cell (other cells are not
//!   there);
//! - a private `/tmp` and `/dev/shm` (tmpfs), and a `/dev` of its own
//!   holding only `null`, `zero`, `full`, `random`, `urandom`, `tty` and
//!   a `pts` of its own (no disks, none of the host's terminals);
//! - every `[isolation] hidden_paths` entry covered: a directory by an
//!   empty read-only tmpfs, a file by `/dev/null`;
//! - no way back: `no_new_privs` (set-uid programs and file capabilities
//!   give nothing) and an empty capability bounding set;
//! - no set-uid or set-gid bit on anything it makes (a seccomp filter,
//!   [`super::setid_filter`]): its workspace is `nosuid` only in its own
//!   view, not on the host;
//! - a Landlock domain (Linux 5.13+, where the kernel has it): writes,
//!   whatever the path — also through `/proc/<pid>/root` of another
//!   process of the agent's user, which leads into that process's view —
//!   only beneath the three writable directories, `/tmp` and `/dev/shm`
//!   (and to devices in its `/dev`); from Linux 6.12 no signal to, and no
//!   abstract socket of, a process outside it (the daemon, other agents).
//!
//! Why directories, not the files, are bound read-write: a bind mount on
//! `cell.json` would be lazily detached the first time the CLI or the
//! daemon renames a new `cell.json` over it (the kernel does that for
//! mount points of other namespaces), leaving the file writable.
//!
//! Everything is resolved inside the new namespace, from descriptors, with
//! `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH` below the cell: a symlink an
//! agent planted (`workspace -> /etc`) fails the start instead of binding
//! the host's directory. The child makes only system calls on data
//! prepared by [`prepare`], and allocates nothing.
//!
//! Needs CAP_SYS_ADMIN (a root daemon) and Linux 5.12 (`mount_setattr`).
//! Where either is missing the start fails with a clear reason: an agent
//! is never run with less isolation than its cell asks for.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::libc;

use crate::store::Dir;

/// The cell's directories the agent may write, relative to the cell.
const WRITABLE: [&CStr; 3] = [c"workspace", c"bus", c".lazarus/heartbeats"];
/// The devices a namespaced agent gets in its `/dev`.
const DEVICES: [(&CStr, &CStr); 6] = [
    (c"/dev/null", c"null"),
    (c"/dev/zero", c"zero"),
    (c"/dev/full", c"full"),
    (c"/dev/random", c"random"),
    (c"/dev/urandom", c"urandom"),
    (c"/dev/tty", c"tty"),
];
/// The links a program expects in `/dev`.
const DEV_LINKS: [(&CStr, &CStr); 5] = [
    (c"/proc/self/fd", c"/dev/fd"),
    (c"/proc/self/fd/0", c"/dev/stdin"),
    (c"/proc/self/fd/1", c"/dev/stdout"),
    (c"/proc/self/fd/2", c"/dev/stderr"),
    (c"pts/ptmx", c"/dev/ptmx"),
];

// The new mount API (Linux 5.2, 5.12 for `mount_setattr`), not yet in nix.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

// Landlock (Linux 5.13; not yet in nix).
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_uint = 1;
const FS_WRITE_FILE: u64 = 1 << 1;
/// REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK,
/// MAKE_FIFO, MAKE_BLOCK, MAKE_SYM: every change of a directory.
const FS_CHANGE_DIR: u64 = 0b1_1111_1111 << 4;
const FS_REFER: u64 = 1 << 13;
const FS_TRUNCATE: u64 = 1 << 14;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Everything the child needs, prepared before the fork.
pub struct Plan {
    /// The cell directory's absolute path (the agent sees it there too).
    cell: CString,
    /// The cells root, and each of its ancestors below `/`, outermost
    /// first (made in the child where a private `/tmp` hid them).
    root_chain: Vec<CString>,
    /// `[isolation] hidden_paths` that exist: path, whether a directory,
    /// and its ancestors below `/` (made again where a private `/tmp`
    /// hid them, so that the path shows empty rather than absent).
    hidden: Vec<(CString, bool, Vec<CString>)>,
    /// Device and inode of `workspace/`, checked again after the mounts.
    workspace: (u64, u64),
    /// The kernel's Landlock ABI version (0: none).
    landlock: i32,
    /// The seccomp filter against set-id modes ([`super::setid_filter`]).
    filter: Vec<libc::sock_filter>,
}

/// A step of the setup that failed, reported to the parent with its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Unshare = 1,
    Private,
    Cell,
    Writable,
    Devices,
    ReadOnly,
    Tmp,
    Dev,
    Hidden,
    Root,
    Attach,
    Workspace,
    Privileges,
    Landlock,
    Filter,
}

impl Step {
    pub fn from_u32(n: u32) -> Option<Step> {
        use Step::*;
        [
            Unshare, Private, Cell, Writable, Devices, ReadOnly, Tmp, Dev, Hidden, Root, Attach,
            Workspace, Privileges, Landlock, Filter,
        ]
        .into_iter()
        .find(|s| *s as u32 == n)
    }

    fn what(self) -> &'static str {
        match self {
            Step::Unshare => "cannot make a mount namespace",
            Step::Private => "cannot make the mounts private",
            Step::Cell => "cannot open the cell in the namespace",
            Step::Writable => {
                "cannot bind workspace/, bus/ or .lazarus/heartbeats/ (a symlink or not a directory?)"
            }
            Step::Devices => "cannot take /dev/null",
            Step::ReadOnly => "cannot make the filesystem read-only",
            Step::Tmp => "cannot mount a private /tmp",
            Step::Dev => "cannot build the agent's /dev",
            Step::Hidden => "cannot cover an [isolation] hidden_paths entry",
            Step::Root => "cannot hide the other cells",
            Step::Attach => "cannot mount the cell",
            Step::Workspace => "the workspace changed while the namespace was built",
            Step::Privileges => "cannot drop privileges",
            Step::Landlock => "cannot enter its Landlock domain",
            Step::Filter => "cannot install its seccomp filter",
        }
    }
}

/// The start error for a failed step: one sentence naming what failed.
pub fn failure(step: Step, errno: nix::errno::Errno) -> String {
    format!(
        "isolation mount-namespace: {}: {}",
        step.what(),
        std::io::Error::from(errno)
    )
}

/// Whether this process can build mount namespaces: the reason if not.
pub fn available() -> Result<(), String> {
    available_in(std::process::id())
}

/// Whether process `pid` (the running daemon) could build mount
/// namespaces for its agents: it needs CAP_SYS_ADMIN and a kernel with
/// `mount_setattr` (Linux 5.12).
pub fn available_in(pid: u32) -> Result<(), String> {
    kernel_supported()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u32 = 21;
    if caps & (1 << CAP_SYS_ADMIN) == 0 {
        let who = if pid == std::process::id() {
            "this process".to_string()
        } else {
            format!("the daemon (pid {pid})")
        };
        return Err(format!(
            "isolation mount-namespace needs CAP_SYS_ADMIN (a daemon running as root), and \
             {who} lacks it"
        ));
    }
    Ok(())
}

fn kernel_supported() -> Result<(), String> {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *SUPPORTED.get_or_init(|| {
        // A call that can only fail: ENOSYS says the kernel lacks it.
        // SAFETY: a system call on integers and a null pointer.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                -1,
                c"".as_ptr(),
                0,
                std::ptr::null::<MountAttr>(),
                0usize,
            )
        };
        !(r < 0 && nix::errno::Errno::last() == nix::errno::Errno::ENOSYS)
    });
    if ok {
        Ok(())
    } else {
        Err("isolation mount-namespace needs Linux 5.12 or later (mount_setattr)".into())
    }
}

/// Prepares the namespace of an agent of the cell open at `cell_dir`:
/// checks what can be checked before the fork, makes sure the writable
/// directories exist (owned by the cell's owner), and renders every path.
pub fn prepare(cell_dir: &Dir, hidden: &[PathBuf]) -> Result<Plan, String> {
    available()?;
    let cell_path = cell_dir.path();
    let Some(root) = cell_path.parent().filter(|p| p.is_absolute()) else {
        return Err(format!(
            "isolation mount-namespace: the cell path {} is not absolute",
            cell_path.display()
        ));
    };
    for rel in ["bus", ".lazarus/heartbeats"] {
        super::owned_dir(cell_dir, rel)
            .map_err(|e| format!("isolation mount-namespace: {rel}: {e}"))?;
    }
    let workspace = super::owned_dir(cell_dir, "workspace")
        .map_err(|e| format!("isolation mount-namespace: workspace: {e}"))?;
    let st = nix::sys::stat::fstat(workspace.as_fd()).map_err(|e| e.to_string())?;
    let cstring = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| format!("a NUL byte in the path {}", p.display()))
    };
    if root.parent().is_none() {
        return Err("isolation mount-namespace: the cells root cannot be / itself".into());
    }
    let chain = |path: &Path| -> Result<Vec<CString>, String> {
        let mut chain = path
            .ancestors()
            .filter(|a| a.parent().is_some())
            .map(cstring)
            .collect::<Result<Vec<_>, _>>()?;
        chain.reverse();
        Ok(chain)
    };
    let root_chain = chain(root)?;
    let mut covered = Vec::new();
    for path in hidden {
        if !path.is_absolute() {
            return Err(format!(
                "[isolation] hidden_paths: {} is not an absolute path",
                path.display()
            ));
        }
        if cell_path.starts_with(path) {
            return Err(format!(
                "[isolation] hidden_paths: {} would hide the cell itself",
                path.display()
            ));
        }
        // What is not there needs no hiding; what is there is covered by
        // its kind (a tmpfs can only cover a directory).
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                let parents = path.parent().map(chain).transpose()?.unwrap_or_default();
                covered.push((cstring(path)?, meta.is_dir(), parents));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!("[isolation] hidden_paths: {}: {e}", path.display()));
            }
        }
    }
    Ok(Plan {
        cell: cstring(cell_path)?,
        root_chain,
        hidden: covered,
        workspace: (st.st_dev, st.st_ino),
        landlock: landlock_abi(),
        filter: super::setid_filter::program(),
    })
}

/// The kernel's Landlock ABI version, 0 if it has none (or it is off);
/// said once in the log when it is missing, since a namespaced agent is
/// then confined by its mounts only.
pub fn landlock_abi() -> i32 {
    static ABI: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *ABI.get_or_init(|| {
        // SAFETY: the documented version query: no pointers dereferenced.
        let abi = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<RulesetAttr>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        } as i32;
        if abi < 1 {
            tracing::warn!(
                "Landlock is not available: mount-namespace agents are confined by their mounts \
                 only, and may write through /proc/<pid>/root of other processes of their user"
            );
            return 0;
        }
        abi
    })
}

fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// `open_tree(2)`.
unsafe fn open_tree(dirfd: i32, path: &CStr, flags: libc::c_uint) -> i32 {
    // SAFETY: the caller passes a valid C string.
    unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) as i32 }
}

/// `move_mount(2)` from a detached tree onto `to` (a path or, with an
/// empty path, the descriptor `to_fd`).
unsafe fn move_mount(tree: i32, to_fd: i32, to: &CStr) -> i32 {
    let flags = if to.is_empty() {
        MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
    } else {
        MOVE_MOUNT_F_EMPTY_PATH
    };
    // SAFETY: valid C strings.
    unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            to_fd,
            to.as_ptr(),
            flags,
        ) as i32
    }
}

/// `mount_setattr(2)` on the mount at `path` (or the tree `fd`).
unsafe fn set_attr(fd: i32, path: &CStr, flags: libc::c_uint, set: u64, clear: u64) -> i32 {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if path.is_empty() {
        flags | libc::AT_EMPTY_PATH as libc::c_uint
    } else {
        flags
    };
    // SAFETY: valid C string and a struct on the stack.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as i32
    }
}

/// A directory below `dir`, reached without following any symlink and
/// without leaving it.
unsafe fn open_beneath(dir: i32, rel: &CStr, flags: i32) -> i32 {
    let how = OpenHow {
        flags: (flags | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: a valid C string and a struct on the stack.
    unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        ) as i32
    }
}

unsafe fn tmpfs(at: &CStr, flags: libc::c_ulong, options: &CStr) -> i32 {
    // SAFETY: valid C strings.
    unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            at.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            options.as_ptr().cast(),
        )
    }
}

/// Builds the agent's view in a forked child, then leaves it with no way
/// to undo it. The working directory ends in the cell's `workspace/`.
///
/// # Safety
///
/// Only in a forked child before exec: it changes the process's mounts,
/// working directory and capabilities, and must not allocate.
pub unsafe fn enter(plan: &Plan) -> Result<(), (Step, i32)> {
    macro_rules! check {
        ($step:expr, $call:expr) => {{
            let r = $call;
            if r < 0 {
                return Err(($step, errno()));
            }
            r
        }};
    }
    let clone = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    let nofollow = libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    // SAFETY: system calls on prepared C strings and stack values.
    unsafe {
        check!(Step::Unshare, libc::unshare(libc::CLONE_NEWNS));
        check!(
            Step::Private,
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        );
        // Detached copies of what the agent will see of its cell, taken
        // before anything covers it (the root may lie under /tmp).
        let cell = check!(
            Step::Cell,
            libc::open(
                plan.cell.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
            )
        );
        let cell_tree = check!(
            Step::Cell,
            open_tree(
                cell,
                c"",
                clone | AT_RECURSIVE | libc::AT_EMPTY_PATH as libc::c_uint
            )
        );
        check!(
            Step::Cell,
            set_attr(
                cell_tree,
                c"",
                AT_RECURSIVE,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                0
            )
        );
        let mut writable = [-1; WRITABLE.len()];
        for (i, rel) in WRITABLE.iter().enumerate() {
            let dir = check!(Step::Writable, open_beneath(cell, rel, libc::O_PATH));
            writable[i] = check!(
                Step::Writable,
                open_tree(
                    dir,
                    c"",
                    clone | AT_RECURSIVE | libc::AT_EMPTY_PATH as libc::c_uint
                )
            );
            libc::close(dir);
            check!(
                Step::Writable,
                set_attr(
                    writable[i],
                    c"",
                    AT_RECURSIVE,
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    MOUNT_ATTR_RDONLY
                )
            );
        }
        libc::close(cell);
        let mut devices = [-1; DEVICES.len()];
        for (i, (path, _)) in DEVICES.iter().enumerate() {
            devices[i] = open_tree(libc::AT_FDCWD, path, clone | nofollow);
            if i == 0 && devices[0] < 0 {
                return Err((Step::Devices, errno()));
            }
        }

        // Everything read-only, set-uid bits and device nodes dead.
        check!(
            Step::ReadOnly,
            set_attr(
                libc::AT_FDCWD,
                c"/",
                AT_RECURSIVE,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                0
            )
        );
        let private = (libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong;
        check!(Step::Tmp, tmpfs(c"/tmp", private, c"mode=1777"));

        // A /dev of its own.
        check!(
            Step::Dev,
            tmpfs(
                c"/dev",
                (libc::MS_NOSUID | libc::MS_NOEXEC) as libc::c_ulong,
                c"mode=0755"
            )
        );
        for (i, (path, _)) in DEVICES.iter().enumerate() {
            if devices[i] < 0 {
                continue;
            }
            let fd = check!(
                Step::Dev,
                libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o666
                )
            );
            libc::close(fd);
            check!(Step::Dev, move_mount(devices[i], libc::AT_FDCWD, path));
            libc::close(devices[i]);
        }
        // A devpts of its own (a new instance): the host's terminals, the
        // operators' among them, are not there to read or write.
        check!(Step::Dev, libc::mkdir(c"/dev/pts".as_ptr(), 0o755));
        check!(
            Step::Dev,
            libc::mount(
                c"devpts".as_ptr(),
                c"/dev/pts".as_ptr(),
                c"devpts".as_ptr(),
                (libc::MS_NOSUID | libc::MS_NOEXEC) as libc::c_ulong,
                c"newinstance,ptmxmode=0666,mode=0620".as_ptr().cast(),
            )
        );
        for (target, link) in DEV_LINKS {
            check!(Step::Dev, libc::symlink(target.as_ptr(), link.as_ptr()));
        }
        check!(Step::Dev, libc::mkdir(c"/dev/shm".as_ptr(), 0o755));
        check!(Step::Dev, tmpfs(c"/dev/shm", private, c"mode=1777"));
        check!(
            Step::Dev,
            set_attr(libc::AT_FDCWD, c"/dev", 0, MOUNT_ATTR_RDONLY, 0)
        );

        for (path, is_dir, parents) in &plan.hidden {
            // Under the private /tmp the path is gone: made again, empty.
            for dir in parents {
                libc::mkdir(dir.as_ptr(), 0o755);
            }
            if *is_dir {
                libc::mkdir(path.as_ptr(), 0o755);
            } else {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            let r = if *is_dir {
                tmpfs(
                    path,
                    (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC)
                        as libc::c_ulong,
                    c"mode=0755,size=4k",
                )
            } else {
                let null = check!(
                    Step::Hidden,
                    open_tree(libc::AT_FDCWD, c"/dev/null", clone | nofollow)
                );
                let r = move_mount(null, libc::AT_FDCWD, path);
                libc::close(null);
                r
            };
            // Gone since `prepare` looked: nothing left to hide.
            if r < 0 && errno() != libc::ENOENT {
                return Err((Step::Hidden, errno()));
            }
        }

        // The cells root, holding only this cell. Its path may have gone
        // with the host's /tmp: made again in the private one.
        for dir in &plan.root_chain {
            if libc::mkdir(dir.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                return Err((Step::Root, errno()));
            }
        }
        let root = plan.root_chain.last().map_or(c"/", |r| r.as_c_str());
        check!(
            Step::Root,
            tmpfs(
                root,
                (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as libc::c_ulong,
                c"mode=0755"
            )
        );
        check!(Step::Root, libc::mkdir(plan.cell.as_ptr(), 0o755));
        check!(
            Step::Attach,
            move_mount(cell_tree, libc::AT_FDCWD, &plan.cell)
        );
        libc::close(cell_tree);
        check!(
            Step::Root,
            set_attr(libc::AT_FDCWD, root, 0, MOUNT_ATTR_RDONLY, 0)
        );

        // The writable directories on the (read-only) cell, reached from
        // the mounted cell without following symlinks.
        let cell = check!(
            Step::Attach,
            libc::open(
                plan.cell.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
            )
        );
        for (i, rel) in WRITABLE.iter().enumerate() {
            let at = check!(Step::Attach, open_beneath(cell, rel, libc::O_PATH));
            check!(Step::Attach, move_mount(writable[i], at, c""));
            libc::close(at);
            libc::close(writable[i]);
        }
        let workspace = check!(Step::Workspace, open_beneath(cell, c"workspace", 0));
        libc::close(cell);
        let mut st: libc::stat = std::mem::zeroed();
        check!(Step::Workspace, libc::fstat(workspace, &mut st));
        if (st.st_dev, st.st_ino) != plan.workspace {
            return Err((Step::Workspace, libc::ESTALE));
        }
        check!(Step::Workspace, libc::fchdir(workspace));
        libc::close(workspace);

        // No way back: nothing the agent execs gains a privilege, and a
        // root agent keeps no capability (it could unmount otherwise).
        check!(
            Step::Privileges,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        );
        for cap in 0..=63 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno() != libc::EINVAL {
                return Err((Step::Privileges, errno()));
            }
        }
        drop_inheritable()?;
        if plan.landlock > 0 {
            restrict_writes(plan)?;
        }
        if !plan.filter.is_empty() {
            super::setid_filter::install(&plan.filter).map_err(|e| (Step::Filter, e))?;
        }
    }
    Ok(())
}

/// The agent's Landlock domain: writes only beneath its writable
/// directories, the private `/tmp` and `/dev/shm`, and to its devices;
/// where the kernel can (ABI 6), no signal or abstract socket beyond it.
/// After `no_new_privs`; the domain outlives setuid and exec.
unsafe fn restrict_writes(plan: &Plan) -> Result<(), (Step, i32)> {
    let abi = plan.landlock;
    let mut write = FS_WRITE_FILE | FS_CHANGE_DIR;
    if abi >= 2 {
        write |= FS_REFER;
    }
    if abi >= 3 {
        write |= FS_TRUNCATE;
    }
    let attr = RulesetAttr {
        handled_access_fs: write,
        handled_access_net: 0,
        scoped: if abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    };
    // Older ABIs take the struct without the fields they do not know.
    let size = if abi >= 6 {
        std::mem::size_of::<RulesetAttr>()
    } else {
        std::mem::size_of::<u64>()
    };
    macro_rules! check {
        ($call:expr) => {{
            let r = $call;
            if r < 0 {
                return Err((Step::Landlock, errno()));
            }
            r
        }};
    }
    // SAFETY: landlock system calls on structs on the stack and
    // descriptors opened here.
    unsafe {
        let ruleset = check!(libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0
        ) as i32);
        let allow = |dir: i32, access: u64| -> i32 {
            let rule = PathBeneath {
                allowed_access: access,
                parent_fd: dir,
            };
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                LANDLOCK_RULE_PATH_BENEATH,
                &rule as *const PathBeneath,
                0,
            ) as i32
        };
        let cell = check!(libc::open(
            plan.cell.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
        ));
        for rel in WRITABLE {
            let dir = check!(open_beneath(cell, rel, libc::O_PATH));
            check!(allow(dir, write));
            libc::close(dir);
        }
        libc::close(cell);
        for path in [c"/tmp", c"/dev/shm"] {
            let dir = check!(libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC
            ));
            check!(allow(dir, write));
            libc::close(dir);
        }
        // Devices one by one (and its own terminals), not all of /dev.
        let device = FS_WRITE_FILE | (write & FS_TRUNCATE);
        for (path, _) in DEVICES {
            let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if fd >= 0 {
                check!(allow(fd, device));
                libc::close(fd);
            }
        }
        let pts = check!(libc::open(
            c"/dev/pts".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC
        ));
        check!(allow(pts, device));
        libc::close(pts);
        check!(libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) as i32);
        libc::close(ruleset);
    }
    Ok(())
}

/// Clears the inheritable capabilities (a root agent's exec would keep
/// them otherwise), keeping the others until the exec drops them.
unsafe fn drop_inheritable() -> Result<(), (Step, i32)> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget/capset on structs on the stack, of the layout the
    // kernel's version 3 expects.
    unsafe {
        if libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        ) < 0
        {
            return Err((Step::Privileges, errno()));
        }
        for d in &mut data {
            d.inheritable = 0;
        }
        if libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) < 0 {
            return Err((Step::Privileges, errno()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_round_trips_through_its_number() {
        for n in 1..=15 {
            let step = Step::from_u32(n).unwrap();
            assert_eq!(step as u32, n);
            assert!(!step.what().is_empty());
        }
        assert_eq!(Step::from_u32(0), None);
        assert_eq!(Step::from_u32(16), None);
    }

    /// The child's own check, for a symlink planted after `prepare`
    /// looked (another agent of the cell racing the start): the setup
    /// fails at the bind, before anything is bound.
    #[test]
    #[cfg_attr(
        not(mount_namespaces),
        ignore = "needs root where unshare(CLONE_NEWNS) is permitted"
    )]
    fn a_symlink_swapped_in_after_prepare_fails_the_setup_in_the_child() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let cell = root.join("cell");
        for d in ["workspace", ".lazarus/heartbeats"] {
            std::fs::create_dir_all(cell.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("/etc", cell.join("bus")).unwrap();
        let ws = std::fs::metadata(cell.join("workspace")).unwrap();
        use std::os::unix::fs::MetadataExt;
        let plan = Plan {
            cell: CString::new(cell.as_os_str().as_bytes()).unwrap(),
            root_chain: Vec::new(),
            hidden: Vec::new(),
            workspace: (ws.dev(), ws.ino()),
            landlock: 0,
            filter: Vec::new(),
        };
        // SAFETY: the child makes only system calls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match unsafe { enter(&plan) } {
                    Err((Step::Writable, libc::ELOOP)) => 0,
                    Err((step, _)) => 10 + step as i32,
                    Ok(()) => 1,
                };
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    #[test]
    fn a_failure_says_what_failed_and_why() {
        let text = failure(Step::Unshare, nix::errno::Errno::EPERM);
        assert!(text.starts_with("isolation mount-namespace: cannot make a mount namespace"));
        assert!(text.contains("not permitted"), "{text}");
    }
}
