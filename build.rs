//! Tells the tests what the machine that builds them can do: whether they
//! are built as root (`cfg(as_root)`: the tests that must play another
//! user — a cell owned by `nobody`, a lock held by `nobody` — run there;
//! CI runs as root), and whether root can make cgroup v2 groups with the
//! freezer and `cgroup.kill` (`cfg(cgroups)`: the tests of agents that
//! leave their process group), whether root may make mount namespaces
//! (`cfg(mount_namespaces)`: the `mount-namespace` isolation tests), and
//! whether podman can run a container here with runc on an overlay of `/`
//! (`cfg(podman)`: the end-to-end `podman` isolation test). Elsewhere those
//! tests are `#[ignore]`d, with the reason. Also whether `promtool`,
//! `systemd-analyze` and `cargo deb` are installed (`cfg(promtool)`,
//! `cfg(systemd_analyze)`, `cfg(cargo_deb)`), for the packaging tests, and
//! whether Chromium and chromedriver are (`cfg(chromium)`), for the
//! dashboard's browser test.

use std::os::unix::fs::MetadataExt;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(as_root)");
    println!("cargo::rustc-check-cfg=cfg(cgroups)");
    println!("cargo::rustc-check-cfg=cfg(mount_namespaces)");
    println!("cargo::rustc-check-cfg=cfg(podman)");
    println!("cargo::rustc-check-cfg=cfg(promtool)");
    println!("cargo::rustc-check-cfg=cfg(systemd_analyze)");
    println!("cargo::rustc-check-cfg=cfg(cargo_deb)");
    println!("cargo::rustc-check-cfg=cfg(chromium)");
    println!("cargo::rerun-if-changed=build.rs");
    // Tools the packaging tests use where they are installed (.ci/run
    // installs them on CI).
    if succeeds("promtool", &["--version"]) {
        println!("cargo::rustc-cfg=promtool");
    }
    // The dashboard's browser test: Debian's chromium and chromium-driver.
    if succeeds("chromedriver", &["--version"]) && succeeds("/usr/bin/chromium", &["--version"]) {
        println!("cargo::rustc-cfg=chromium");
    }
    if succeeds("systemd-analyze", &["--version"]) {
        println!("cargo::rustc-cfg=systemd_analyze");
    }
    if succeeds("cargo", &["deb", "--version"]) && succeeds("dpkg-deb", &["--version"]) {
        println!("cargo::rustc-cfg=cargo_deb");
    }
    // Cargo made OUT_DIR as the user that builds: its owner is that user.
    let out = std::env::var_os("OUT_DIR").expect("OUT_DIR");
    let root = std::fs::metadata(out).is_ok_and(|m| m.uid() == 0);
    if root {
        println!("cargo::rustc-cfg=as_root");
        if cgroup2_with_kill() {
            println!("cargo::rustc-cfg=cgroups");
        }
        if succeeds("unshare", &["--mount", "true"]) {
            println!("cargo::rustc-cfg=mount_namespaces");
        }
        if succeeds("podman", PODMAN_PROBE) {
            println!("cargo::rustc-cfg=podman");
        }
    }
}

/// The container the podman test runs (its `[isolation] podman_args` and
/// `podman_rootfs`), with `true` as its command.
const PODMAN_PROBE: &[&str] = &[
    "--runtime=runc",
    "run",
    "--rm",
    "--pull=never",
    "--log-driver=passthrough",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=4096:4096",
    "--rootfs",
    "/:O",
    "true",
];

fn succeeds(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A cgroup2 mount whose groups have `cgroup.kill` (Linux 5.14+): a
/// throwaway group is made beneath the mount, looked at, and removed.
fn cgroup2_with_kill() -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return false;
    };
    let Some(mount) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| f[1].to_string())
    }) else {
        return false;
    };
    let probe =
        std::path::Path::new(&mount).join(format!("lazarus-pit-build-{}", std::process::id()));
    if std::fs::create_dir(&probe).is_err() {
        return false;
    }
    let ok = probe.join("cgroup.kill").exists() && probe.join("cgroup.freeze").exists();
    let _ = std::fs::remove_dir(&probe);
    ok
}
