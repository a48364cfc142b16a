//! Tells the tests whether they are built as root: the tests that must
//! play another user (a cell owned by `nobody`, a lock held by `nobody`)
//! run there — CI runs as root — and are `#[ignore]`d, with the reason,
//! everywhere else (`cfg(as_root)`).

use std::os::unix::fs::MetadataExt;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(as_root)");
    println!("cargo::rerun-if-changed=build.rs");
    // Cargo made OUT_DIR as the user that builds: its owner is that user.
    let out = std::env::var_os("OUT_DIR").expect("OUT_DIR");
    if std::fs::metadata(out).is_ok_and(|m| m.uid() == 0) {
        println!("cargo::rustc-cfg=as_root");
    }
}
