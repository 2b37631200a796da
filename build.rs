//! Link options for the release binary, which keep an idle agent's
//! resident text small (issue 15: an idle agent in 10 MB).
//!
//! - `link/text-order.txt` (written by `scripts/text_order.py`, whose doc
//!   says why and when) lays the functions an agent runs as it starts,
//!   serves and idles together at the start of `.text`. The kernel maps text
//!   in 64 KiB windows around each page touched; spread over the binary,
//!   that code kept 8.4 MB of it resident, laid out together 2.7–3.1 MB.
//! - Relative relocations packed (`DT_RELR`, glibc 2.36 or later): the
//!   loader reads each of them at start, and as `RELA` entries they were
//!   592 KiB resident in every agent; packed, 12 KiB.
//!
//! Both are options of LLD, the linker Rust uses for this target since
//! 1.90; with any other target, a toolchain before it or a linker chosen
//! in RUSTFLAGS, the binary links as before. `TRELLIS_PLAIN_LINK=1` opts out.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/text-order.txt");
    println!("cargo:rerun-if-env-changed=TRELLIS_PLAIN_LINK");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let lld_target = env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    let plain = env::var_os("TRELLIS_PLAIN_LINK").is_some_and(|v| v == "1");
    // A linker chosen by flags may not be LLD.
    let linker_flags = env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"));
    if !release || !lld_target || plain || linker_flags || !rustc_links_with_lld() {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in [
        format!("--symbol-ordering-file={dir}/link/text-order.txt"),
        // A symbol the file names but the binary lacks (a stale file) is
        // no error: that function keeps the compiler's place.
        "--no-warn-symbol-ordering".into(),
        "-z,pack-relative-relocs".into(),
    ] {
        println!("cargo:rustc-link-arg-bin=trellis=-Wl,{arg}");
    }
}

/// Whether the compiler is 1.90 or later, which links this target with
/// LLD unless told otherwise.
fn rustc_links_with_lld() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
