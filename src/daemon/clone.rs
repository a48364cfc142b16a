//! Starting an agent straight into its cgroup: `clone3` with
//! `CLONE_INTO_CGROUP` (Linux 5.7+).
//!
//! Why not `fork` and a write of `cgroup.procs` in the child: moving a
//! process between cgroups takes the kernel's `cgroup_threadgroup_rwsem`
//! for writing, which waits for an RCU grace period — 5 to 15 ms here,
//! serialised over every start. With a hundred agents due at once that
//! was most of a second. A process cloned into its cgroup is never moved:
//! it is born there, under the read side of that lock.
//!
//! The child is a copy of the daemon, as after `fork`: between the clone
//! and `execve` it makes only async-signal-safe system calls on data
//! prepared before, and allocates nothing. Failures before `execve` are
//! reported through a close-on-exec pipe (its errno), as the standard
//! library does for `Command`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;

use nix::libc;

/// Everything the child needs, prepared before the clone.
pub struct Prepared {
    /// Candidate paths of the program, in `PATH` order (one if `argv[0]`
    /// has a slash).
    pub programs: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub workspace: RawFd,
    pub limits: Vec<(nix::sys::resource::Resource, u64)>,
    /// uid, gid and groups to switch to.
    pub ids: Option<(nix::unistd::Uid, nix::unistd::Gid, Vec<nix::unistd::Gid>)>,
    /// Written to stdout right before exec (the log's header line).
    pub header: Vec<u8>,
    /// `mount-namespace`: the view to build (it also sets the working
    /// directory); `None`: only `fchdir` to `workspace`.
    pub sandbox: Option<super::sandbox::Plan>,
    /// Passed to the program as descriptors 3 and 4 (podman's env file
    /// and seccomp profile).
    pub fds: [Option<RawFd>; 2],
}

/// How a start through `clone3` ended.
pub enum Outcome {
    /// The agent runs (it has exec'd): its pid.
    Started(i32),
    /// The child could not exec: the errno of the call that failed, and
    /// the namespace step it was part of, if it was.
    Failed(nix::errno::Errno, Option<super::sandbox::Step>),
    /// `clone3` or `CLONE_INTO_CGROUP` is not available here (old kernel,
    /// a seccomp filter): start it the other way.
    Unsupported(nix::errno::Errno),
}

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The program candidates for `argv0` under `path` (the agent's `PATH`).
pub fn candidates(argv0: &str, path: &str) -> Vec<String> {
    if argv0.contains('/') {
        return vec![argv0.to_string()];
    }
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            format!("{}/{argv0}", dir.trim_end_matches('/'))
        })
        .collect()
}

/// Clones a child into the cgroup open at `cgroup` and execs the agent
/// there.
pub fn spawn_into(cgroup: BorrowedFd<'_>, p: &Prepared) -> Outcome {
    let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(pipe) => pipe,
        Err(e) => return Outcome::Failed(e, None),
    };
    // Pointer arrays for execve, NULL-terminated, built before the clone.
    let argv: Vec<*const libc::c_char> = p
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = p
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    let write_fd = write.as_raw_fd();
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of
    // the address space and runs only `child` (async-signal-safe calls on
    // the prepared data), which ends in execve or _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: in the child, see above.
        unsafe { child(p, &argv, &envp, write_fd) }
    }
    drop(write);
    if pid < 0 {
        let errno = nix::errno::Errno::last();
        return match errno {
            nix::errno::Errno::ENOSYS
            | nix::errno::Errno::EPERM
            | nix::errno::Errno::E2BIG
            | nix::errno::Errno::EINVAL
            | nix::errno::Errno::EOPNOTSUPP => Outcome::Unsupported(errno),
            e => Outcome::Failed(e, None),
        };
    }
    let pid = pid as i32;
    // EOF: it exec'd (the pipe closed on exec). Eight bytes: the step of
    // the namespace setup (0: none) and an errno.
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(&read, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if got == buf.len() {
        // It _exit()ed: reap it now.
        let mut status = 0;
        // SAFETY: a plain waitpid on our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        return Outcome::Failed(
            nix::errno::Errno::from_raw(errno),
            super::sandbox::Step::from_u32(step),
        );
    }
    Outcome::Started(pid)
}

/// The child's side: set up, exec, or report the errno and `_exit(127)`.
///
/// # Safety
///
/// Only in the child of [`spawn_into`]'s clone.
unsafe fn child(
    p: &Prepared,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    report: RawFd,
) -> ! {
    let fail_at = |step: u32, errno: i32| -> ! {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&step.to_ne_bytes());
        bytes[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: plain system calls on integers and a stack buffer.
        unsafe {
            libc::write(report, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127)
        }
    };
    let fail = |errno: i32| -> ! { fail_at(0, errno) };
    let errno = || nix::errno::Errno::last_raw();
    // SAFETY: async-signal-safe system calls only, on prepared data.
    unsafe {
        for (from, to) in [
            (p.stdin.as_raw_fd(), 0),
            (p.stdout.as_raw_fd(), 1),
            (p.stderr.as_raw_fd(), 2),
        ] {
            if libc::dup2(from, to) < 0 {
                fail(errno());
            }
        }
        if libc::setsid() < 0 {
            fail(errno());
        }
        match &p.sandbox {
            Some(plan) => {
                if let Err((step, errno)) = super::sandbox::enter(plan) {
                    fail_at(step as u32, errno);
                }
            }
            None => {
                if libc::fchdir(p.workspace) < 0 {
                    fail(errno());
                }
            }
        }
        // Signals as a new program expects them: nothing blocked, nothing
        // ignored (the daemon ignores SIGPIPE, whoever started it may have
        // ignored more, and ignored stays ignored across exec).
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        super::process::default_signals();
        super::process::cloexec_from_3();
        if super::process::pass_fds(&p.fds).is_err() {
            fail(errno());
        }
        super::process::restore_nofile_limit();
        for (resource, value) in &p.limits {
            if nix::sys::resource::setrlimit(*resource, *value, *value).is_err() {
                fail(errno());
            }
        }
        if let Some((uid, gid, groups)) = &p.ids
            && super::process::become_user(*uid, *gid, groups).is_err()
        {
            fail(errno());
        }
        super::process::write_header(&p.header);
        let mut last = libc::ENOENT;
        let mut denied = false;
        for program in &p.programs {
            libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            last = errno();
            match last {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR => {}
                _ => break,
            }
        }
        fail(if denied && matches!(last, libc::ENOENT | libc::ENOTDIR) {
            libc::EACCES
        } else {
            last
        })
    }
}

/// Waits for a child started by [`spawn_into`] once it has ended (its
/// pidfd said so): reaps it, its exit status.
pub fn reap(pid: i32) -> std::io::Result<std::process::ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: a plain waitpid on our own, unreaped child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(std::process::ExitStatus::from_raw(status));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_looked_up_in_the_agents_path() {
        assert_eq!(candidates("/bin/sh", "/x"), vec!["/bin/sh"]);
        assert_eq!(candidates("./run", "/x"), vec!["./run"]);
        assert_eq!(
            candidates("sh", "/usr/bin:/bin/::"),
            vec!["/usr/bin/sh", "/bin/sh", "./sh", "./sh"]
        );
    }
}
