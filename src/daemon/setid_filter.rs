//! A seccomp filter for `mount-namespace` agents: no set-user-ID or
//! set-group-ID bit on any file they make or change.
//!
//! Why: inside its namespace every mount is `nosuid`, but the agent's
//! workspace is the host's directory, and on the host it is not. An agent
//! running as root (a root-owned cell) could otherwise `chmod 4755` a copy
//! of a shell in its workspace and hand every user of the host a root
//! shell; a non-root agent could hand out its own uid. Landlock has no
//! right for modes, so the calls that set one are filtered: `chmod`,
//! `fchmod`, `fchmodat(2)`, `mknod(at)` and `creat` by their mode argument,
//! `open`/`openat` by their mode when they create; `openat2` (its mode is
//! behind a pointer the filter cannot read) and `io_uring_setup` (its
//! operations bypass the filter) are refused with ENOSYS, which programs
//! take as "fall back". Calls of another architecture's ABI (i386 through
//! `int 0x80`, x32) are refused outright: their numbers differ.

use nix::libc;

/// The bits refused: `S_ISUID | S_ISGID`.
const SET_ID: u32 = 0o6000;
/// `O_CREAT`, and `__O_TMPFILE` (a creating open).
const CREATING: u32 = (libc::O_CREAT as u32) | 0o20000000;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

// Classic BPF, as seccomp runs it.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
/// `struct seccomp_data`: `nr` at 0, `arch` at 4, `args[i]` at 16 + 8 i
/// (its low word first, on these little-endian machines).
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg(i: u32) -> u32 {
    16 + 8 * i
}

/// What to look at in one call.
#[derive(Clone, Copy)]
enum Check {
    /// Its mode argument.
    Mode(u32),
    /// Its mode argument, if its flags argument creates.
    Creating { flags: u32, mode: u32 },
    /// Refused with ENOSYS.
    NoSys,
}

fn calls() -> Vec<(i64, Check)> {
    let mut calls = vec![
        (libc::SYS_fchmod, Check::Mode(1)),
        (libc::SYS_fchmodat, Check::Mode(2)),
        (452, Check::Mode(2)), // fchmodat2 (Linux 6.6)
        (libc::SYS_mknodat, Check::Mode(2)),
        (libc::SYS_openat, Check::Creating { flags: 2, mode: 3 }),
        (libc::SYS_openat2, Check::NoSys),
        (libc::SYS_io_uring_setup, Check::NoSys),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        (libc::SYS_chmod, Check::Mode(1)),
        (libc::SYS_creat, Check::Mode(1)),
        (libc::SYS_mknod, Check::Mode(1)),
        (libc::SYS_open, Check::Creating { flags: 1, mode: 2 }),
    ]);
    calls
}

/// An instruction whose jumps name absolute targets, resolved below.
struct Insn {
    code: u16,
    k: u32,
    jt: usize,
    jf: usize,
}

/// Elsewhere the filter's system call numbers are not known here: none
/// (the spec says which architectures have it).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn program() -> Vec<libc::sock_filter> {
    Vec::new()
}

/// The filter program, built before the fork (the child only installs it).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn program() -> Vec<libc::sock_filter> {
    const NEXT: usize = usize::MAX;
    let calls = calls();
    // Layout: header (4), one JEQ per call, ALLOW, the blocks, then the
    // three returns.
    let header = 4;
    let allow_all = header + calls.len();
    let mut blocks = Vec::new();
    let mut block_at = Vec::new();
    let mut at = allow_all + 1;
    for (_, check) in &calls {
        block_at.push(at);
        let len = match check {
            Check::Mode(_) => 2,
            Check::Creating { .. } => 4,
            Check::NoSys => 0,
        };
        blocks.push(*check);
        at += len;
    }
    let (allow, deny, nosys) = (at, at + 1, at + 2);
    let load = |k| Insn {
        code: LD_W_ABS,
        k,
        jt: NEXT,
        jf: NEXT,
    };
    let jump = |code, k, jt, jf| Insn { code, k, jt, jf };
    let ret = |k| Insn {
        code: RET_K,
        k,
        jt: NEXT,
        jf: NEXT,
    };
    let mut p = vec![
        load(ARCH),
        jump(JEQ_K, AUDIT_ARCH, NEXT, deny),
        load(NR),
        // x32 system calls (bit 30) on x86_64; none elsewhere.
        jump(JGE_K, 0x4000_0000, deny, NEXT),
    ];
    for (i, (nr, check)) in calls.iter().enumerate() {
        let target = match check {
            Check::NoSys => nosys,
            _ => block_at[i],
        };
        p.push(jump(JEQ_K, *nr as u32, target, NEXT));
    }
    p.push(ret(RET_ALLOW));
    for check in blocks {
        match check {
            Check::Mode(i) => {
                p.push(load(arg(i)));
                p.push(jump(JSET_K, SET_ID, deny, allow));
            }
            Check::Creating { flags, mode } => {
                p.push(load(arg(flags)));
                p.push(jump(JSET_K, CREATING, NEXT, allow));
                p.push(load(arg(mode)));
                p.push(jump(JSET_K, SET_ID, deny, allow));
            }
            Check::NoSys => {}
        }
    }
    p.push(ret(RET_ALLOW));
    p.push(ret(RET_ERRNO | libc::EPERM as u32));
    p.push(ret(RET_ERRNO | libc::ENOSYS as u32));
    assert_eq!(p.len(), nosys + 1, "the layout above");
    p.iter()
        .enumerate()
        .map(|(i, insn)| {
            let rel = |t: usize| if t == NEXT { 0 } else { (t - i - 1) as u8 };
            libc::sock_filter {
                code: insn.code,
                jt: rel(insn.jt),
                jf: rel(insn.jf),
                k: insn.k,
            }
        })
        .collect()
}

/// Installs `program` on this thread (and what it execs). In a forked
/// child, after `no_new_privs`. Async-signal-safe; returns the errno.
///
/// # Safety
///
/// `program` must be a valid filter (from [`program`]).
pub unsafe fn install(program: &[libc::sock_filter]) -> Result<(), i32> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the program outlives the call, which copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(nix::errno::Errno::last_raw());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        let p = program();
        assert!(p.len() < 256, "8-bit jumps reach");
        for (i, insn) in p.iter().enumerate() {
            if insn.code & 0x07 == 0x05 {
                assert!(i + 1 + (insn.jt as usize) < p.len());
                assert!(i + 1 + (insn.jf as usize) < p.len());
            }
        }
        assert_eq!(p.last().map(|i| i.code), Some(RET_K));
    }

    /// In a forked child: the filter refuses set-id modes, and lets the
    /// rest through.
    #[test]
    fn set_id_modes_are_refused_and_the_rest_goes_through() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::ffi::CString::new(dir.path().join("f").to_str().unwrap()).unwrap();
        let made = std::ffi::CString::new(dir.path().join("g").to_str().unwrap()).unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let program = program();
        // SAFETY: the child makes only system calls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    if install(&program).is_err() {
                        libc::_exit(10);
                    }
                    let errno = || nix::errno::Errno::last_raw();
                    if libc::chmod(file.as_ptr(), 0o4755) == 0 || errno() != libc::EPERM {
                        libc::_exit(11);
                    }
                    if libc::chmod(file.as_ptr(), 0o2755) == 0 {
                        libc::_exit(12);
                    }
                    if libc::chmod(file.as_ptr(), 0o755) != 0 {
                        libc::_exit(13);
                    }
                    let fd = libc::open(made.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o4755);
                    if fd >= 0 || errno() != libc::EPERM {
                        libc::_exit(14);
                    }
                    // A plain open whose (unused) mode has the bits set.
                    let fd =
                        libc::syscall(libc::SYS_openat, libc::AT_FDCWD, file.as_ptr(), 0, 0o4755);
                    if fd < 0 {
                        libc::_exit(15);
                    }
                    let fd = libc::open(made.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
                    if fd < 0 || libc::fchmod(fd, 0o6755) == 0 {
                        libc::_exit(16);
                    }
                    0
                };
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
