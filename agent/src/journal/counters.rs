//! The received-counters page, memory-mapped: the event path counts every
//! event it journals (or skips) here with one atomic add, no system call.
//! The page lives in the page cache, so a SIGKILL cannot lose a count; what
//! the journal had not written by then is lost and counted at the next start
//! (`format::recover`). A power loss can lose both (until the kernel writes
//! the page back): the count is then an underestimate.

use std::{
    fs::File,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use super::format::{COUNTERS_LEN, encode_counters};

pub struct Counters {
    ptr: *mut u8,
}

// The mapping is shared memory counted with atomics only.
unsafe impl Send for Counters {}

impl Counters {
    /// Writes a fresh page for `epoch` (zero counts), durably, and maps it.
    pub fn create(path: &Path, epoch: u64) -> std::io::Result<Counters> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&encode_counters(epoch))?;
        f.sync_all()?;
        drop(f);
        // The epoch switch is the commit point of a new journal: atomic.
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let f =
            std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: a shared read-write mapping of a file of COUNTERS_LEN bytes
        // we just wrote; it stays valid after the fd is closed.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                COUNTERS_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Counters { ptr: ptr.cast() })
    }

    fn cell(&self, q: usize) -> &AtomicU64 {
        // SAFETY: offsets 16 and 24 of a page-aligned mapping of 4096 bytes:
        // in bounds and 8-byte aligned; only ever accessed atomically.
        unsafe { &*self.ptr.add(16 + 8 * q).cast::<AtomicU64>() }
    }

    /// One more event of queue `q` (0 high, 1 low) received.
    pub fn bump(&self, q: usize) {
        self.cell(q).fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> [u64; 2] {
        [self.cell(0).load(Ordering::Relaxed), self.cell(1).load(Ordering::Relaxed)]
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `create`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.cast(), COUNTERS_LEN);
        }
    }
}
