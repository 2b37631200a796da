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

/// jemalloc's `malloc_conf`, read once when it starts: one arena, and
/// per-thread caches for allocations up to 4 KiB only, at most 32 of each
/// size. An agent's threads are few and mostly waiting: with jemalloc's
/// defaults (an arena per core, caches up to 32 KiB) an idle agent held
/// 4.6 MB of anonymous memory, with caches up to 1 KiB 3.5 MB (glibc 3.3
/// MB). Without the caches it held 3.0 MB, but answering 10,000 parked
/// queries took a quarter more CPU (`kv_fanout`: 66-70 against 60 µs per
/// answer). Up to 4 KiB takes in an HTTP handler's boxed future (a KV
/// read's is about 3 KiB), which the single arena's lock served before:
/// 0.7-1.3 µs less CPU per answer in `kv_fanout` (three interleaved
/// pairs, 15-17 µs in all), for 0.2 MB more
/// anonymous memory idle (3.4-3.6 against 3.2-3.3 MB) and, in `scale`, the
/// same memory per instance on a durable server (789-791 B bare, 1,466 B
/// rich) but 50-60 B more per rich instance on a dev agent (2,037-2,052
/// against 1,989 B): freed blocks of 1-4 KiB the threads' caches keep.
/// Each size's cache holds at most 32 blocks (jemalloc's default is 200):
/// with 200 an idle agent's threads held 0.2 MB more of freed blocks, and
/// `kv_fanout` measured no difference in CPU per answer (24.1, 20.9, 26.8
/// against 24.3, 26.2, 24.7 µs, three interleaved pairs in a slow hour).
/// No background thread: it cost DNS about a tenth more CPU per query at
/// 40,000 queries a second (`benches/dns_vs_nsd`: 1.12-1.13 against
/// 1.01-1.03 times Knot's, two runs each), and without it the agent's own
/// timers still let jemalloc's decay hand the pages a burst of work freed
/// back to the system within about 20 s
/// (`benches/scale`: 1,014 bytes per bare instance either way).
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a 'static, immutable, NUL-terminated string.
unsafe impl Sync for MallocConf {}

// SAFETY: jemalloc reads this symbol (its `malloc_conf` under the crate's
// `_rjem_` prefix) as a `const char *`, which the transparent wrapper is.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"narenas:1,tcache_max:4096,tcache_nslots_small_max:32".as_ptr());

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
