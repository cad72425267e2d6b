//! Giving memory back after a burst: glibc's malloc keeps what was freed in
//! its arenas (one per thread that allocated), so an agent that handled a
//! burst of events stays at the burst's peak RSS for good. The run loop
//! shrinks its own tables and calls [`trim`] every `TRIM_EVERY`.

use std::time::Duration;

/// How often the run loop gives memory back (a trim of a ~20 MB heap takes
/// well under a millisecond).
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Returns the allocator's free pages to the kernel. musl's allocator
/// unmaps freed memory by itself; glibc's needs `malloc_trim`.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Shrinks a map that a burst grew far beyond what it holds now (keeping
/// some room, so a steady load does not regrow it at every call).
pub fn shrink_map<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    m: &mut std::collections::HashMap<K, V, S>,
) {
    if m.capacity() > 1024 && m.capacity() > 4 * m.len() {
        m.shrink_to(m.len() * 2);
    }
}
