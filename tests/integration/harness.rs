//! The tests' door into the test kit (`trellis-testkit`): the binary cargo
//! built for these tests, and the few paths they share.

use std::path::{Path, PathBuf};

use trellis_testkit::{Agent, Trellis};

/// The `trellis` binary under test. `TRELLIS_TEST_BIN` runs another build:
/// in a target dir shared by several worktrees, `target/debug/trellis` is
/// whichever was built last, while `deps/trellis-<hash>` is this one's.
pub(crate) fn trellis() -> Trellis {
    Trellis::from_env_or("TRELLIS_TEST_BIN", env!("CARGO_BIN_EXE_trellis"))
}

/// A durable single server `s1`, bootstrapped alone, with its state in
/// `dir` (which outlives it, for a restart or another binary to open).
pub(crate) fn single_server(dir: &Path) -> Agent {
    trellis()
        .server()
        .node("s1")
        .bootstrap_expect(1)
        .data_dir(dir)
        .start()
}

/// A temporary directory that is removed on drop.
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The repository root, for `zones/` and example configs.
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
