//! The release binary's link: lays out first the functions an agent runs,
//! which keeps an idle agent's resident text small (issue 15: an idle agent
//! in 10 MB).
//!
//! `link/text-order.txt` (written by `scripts/text_order.py`, whose doc
//! says why and when) names the functions an agent runs as it starts, idles
//! and serves; LLD's `--symbol-ordering-file` puts them together at the
//! start of `.text`. The kernel maps text in 64 KiB windows around each
//! page touched: spread over the binary, that code kept 8.4 MB of it
//! resident; laid out together, 2.7–3.1 MB.
//!
//! It also packs the relative relocations (`DT_RELR`) when the binary
//! can run where it is built: the loader reads every one at start, 592 KiB
//! as `RELA` entries and 12 KiB packed. A binary with packed relocations
//! needs glibc 2.36 or later (`GLIBC_ABI_DT_RELR`), where it otherwise runs
//! on 2.34 (RHEL 9, Amazon Linux 2023, Ubuntu 22.04). So the probe below is
//! linked with them and run: on a machine whose glibc is older, or when
//! building for another target, relocations stay as they were, as Fedora's
//! and Gentoo's toolchains decide it. Packing is announced as a build
//! warning, since the machine building decides it and not the hosts the
//! binary goes to. `TRELLIS_RELR=0` leaves them unpacked (a binary meant
//! for hosts older than the one building it, or a toolchain that targets
//! an older glibc from a newer machine), and `TRELLIS_RELR=1` packs them
//! without running the probe. The decision is kept with the build's other
//! outputs: a `target/` directory carried to a system with an older glibc
//! keeps it (`cargo clean -p trellis --release` there decides again).
//! Watching glibc's file would not help: packages keep their build's
//! modification time, which is all cargo compares.
//!
//! Only a release build asks for these, and only when the linker takes
//! them: a probe links an empty program with the same compiler, flags,
//! linker and options first. Rust's own builds for x86_64 Linux link with
//! LLD since 1.90; a distribution's compiler may use GNU ld, which lacks
//! `--symbol-ordering-file`, and the binary then links as before (neither
//! ordered nor packed). `TRELLIS_PLAIN_LINK=1` skips both.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/text-order.txt");
    // What decides the linker and its flags (cargo#13003: with --target,
    // a change to the target's flags alone does not rerun this script).
    for var in [
        "TRELLIS_PLAIN_LINK",
        "TRELLIS_RELR",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let release = env::var("PROFILE").as_deref() == Ok("release");
    if !release || flag("TRELLIS_PLAIN_LINK") {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&dir).join("link/text-order.txt");
    if !order.is_file() {
        println!(
            "cargo:warning={} is missing: text left in the compiler's order",
            order.display()
        );
        return;
    }
    // Each option after its own -Xlinker: -Wl, would split a path at commas.
    let options = vec![
        format!("--symbol-ordering-file={}", order.display()),
        // A name the file lists but the binary lacks (a stale file) is no
        // error: that function keeps the compiler's place.
        "--no-warn-symbol-ordering".into(),
    ];
    let relr = ["-z".to_owned(), "pack-relative-relocs".to_owned()];
    let packed = [options.as_slice(), &relr].concat();
    let options = match env::var("TRELLIS_RELR").as_deref() {
        Ok("1") => packed,
        Ok("0") => options,
        Ok("") | Err(_) if runs_here(&packed) => packed,
        Ok("") | Err(_) => options,
        Ok(other) => panic!("TRELLIS_RELR is {other:?}: 1 packs relocations, 0 does not"),
    };
    if links_with(&options).is_none() {
        println!(
            "cargo:warning=the linker does not take {options:?}: text left in the compiler's order"
        );
        return;
    }
    for option in &options {
        println!("cargo:rustc-link-arg-bin=trellis=-Xlinker");
        println!("cargo:rustc-link-arg-bin=trellis={option}");
    }
    if options.ends_with(&relr) {
        println!(
            "cargo:warning=relocations packed (DT_RELR): this trellis needs glibc 2.36 or later \
             where it runs; TRELLIS_RELR=0 builds one for older hosts"
        );
    }
}

fn flag(var: &str) -> bool {
    env::var_os(var).is_some_and(|v| v == "1")
}

/// Whether an empty program linked with `options` runs on this machine,
/// which is the target: with packed relocations, whether its glibc reads
/// them.
fn runs_here(options: &[String]) -> bool {
    if env::var("HOST").ok() != env::var("TARGET").ok() {
        return false;
    }
    links_with(options).is_some_and(|probe| {
        Command::new(probe)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The path of an empty program linked with `options` passed to the
/// linker, by the compiler, flags and linker this build uses; `None` when
/// it does not link.
fn links_with(options: &[String]) -> Option<PathBuf> {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = out.join("probe.rs");
    std::fs::write(&src, "fn main() {}\n").ok()?;
    let probe = out.join("link_probe");
    // An earlier probe's binary must not answer for this one.
    let _ = std::fs::remove_file(&probe);
    let mut rustc = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    rustc
        .arg("--crate-name=link_probe")
        .arg("--edition=2021")
        .arg("-o")
        .arg(&probe)
        .arg(&src);
    if let Ok(target) = env::var("TARGET") {
        rustc.arg(format!("--target={target}"));
    }
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        rustc.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    if let Ok(linker) = env::var("RUSTC_LINKER") {
        rustc.arg(format!("-Clinker={linker}"));
    }
    for option in options {
        rustc
            .arg("-Clink-arg=-Xlinker")
            .arg(format!("-Clink-arg={option}"));
    }
    let linked = rustc
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    linked.then_some(probe)
}
