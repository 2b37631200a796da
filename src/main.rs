//! The `trellis` binary: parse the command line and hand over to the
//! library, with jemalloc as the process's allocator.

use std::process::ExitCode;

/// jemalloc rather than glibc's malloc. A catalog is millions of small
/// allocations (names, tags, rows, keys), and glibc's chunk headers and
/// 32-byte smallest chunk cost nearly a quarter of it: at 100,000 instances
/// with tags, meta and a check, a durable server holds 2,174 bytes per
/// instance with jemalloc against 2,833 with glibc (`benches/scale`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's `malloc_conf`, read once when it starts: one arena,
/// per-thread caches for allocations up to 1 KiB only, and its background
/// thread. An agent's threads are few and mostly waiting: with jemalloc's
/// defaults (an arena per core, caches up to 32 KiB) an idle agent held
/// 4.6 MB of anonymous memory, with these 3.5 MB (glibc 3.3 MB). Without
/// the caches it held 3.0 MB, but answering 10,000 parked queries took a
/// quarter more CPU (`kv_fanout`: 66-70 against 60 µs per answer); the
/// catalog's memory per instance is the same either way. Without the
/// background thread, pages freed by a burst of work (a load, a restart's
/// decoding) stayed resident until later allocations happened to purge
/// them, which in an idle process is never: about 100 bytes per instance
/// at 100,000 (`benches/scale`); with it they go back to the system over
/// jemalloc's dirty decay, 10 s.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a 'static, immutable, NUL-terminated string.
unsafe impl Sync for MallocConf {}

// SAFETY: jemalloc reads this symbol (its `malloc_conf` under the crate's
// `_rjem_` prefix) as a `const char *`, which the transparent wrapper is.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"narenas:1,tcache_max:1024,background_thread:true".as_ptr());

fn main() -> ExitCode {
    let cli = trellis::cli::Cli::from_env();
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", trellis::cli::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
