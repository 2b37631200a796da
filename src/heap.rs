//! Handing memory the process freed back to the kernel, at the two moments
//! it pays: after an install swapped a whole catalog out, and once the
//! agent serves and its start-up garbage is freed.
//!
//! The binary's allocator is jemalloc (`src/main.rs`). It keeps the pages
//! it freed until its decay reaches them, and without a background thread
//! that happens only when there is allocation work to tick it, which an
//! idle agent has little of; each thread also keeps freed blocks in its own
//! cache. Tests and benchmarks that link this library run on glibc's
//! malloc, which [`release_freed`] trims as well.

/// Purges every jemalloc arena's freed pages, and trims glibc's heap.
pub fn release_freed() {
    mallctl(c"arena.4096.purge");
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists and madvises
    // pages no allocation holds; it takes the arenas' locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Once the agent serves: what parsing the command line, reading the
/// configuration and setting the parts up allocated and freed goes back to
/// the kernel. Most of that work runs on the calling thread (the runtime's
/// `block_on`, `cli/agent.rs`; a durable server opens its storage on
/// blocking threads, which exit when idle), so its cache is flushed first,
/// then the arenas purged. An idle dev agent's `RssAnon` 1 s after its start:
/// 3,220-3,276 KiB with this against 3,372-3,404 without (interleaved
/// runs, before the 32-block caches of `src/main.rs` took it to ~3,060).
pub fn release_after_start() {
    mallctl(c"thread.tcache.flush");
    release_freed();
}

/// Runs a jemalloc control that takes and returns nothing. Without
/// jemalloc as the global allocator (tests) it starts jemalloc's own
/// state, which nothing allocates from, and acts on that.
fn mallctl(name: &std::ffi::CStr) {
    // SAFETY: the controls named here (`arena.<i>.purge`,
    // `thread.tcache.flush`) take no argument and return nothing: every
    // pointer is null and the length 0. An error is a return code, which
    // there is nothing to do about.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}
