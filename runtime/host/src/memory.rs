//! Giving freed heap memory back to the operating system.

/// Returns the heap's free memory to the operating system (glibc's `malloc_trim`). Loading
/// a model version reads its component whole (~20 MB) and builds its instances; once the
/// version is unloaded those buffers are free, but glibc keeps large freed blocks in its
/// arenas (its mmap threshold grows after the first large free, so later ones come from
/// the heap), and a server's RSS grew by about 20 MiB with every promote that swapped the
/// MLP's version (`kiln serve`, one version loaded at a time). Cheap enough to call after
/// every routing change; a no-op on other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and has no preconditions; glibc locks each
        // arena while it trims it, so calling it while other threads allocate is safe.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Large allocations (1 MiB and up) come straight from the OS and go back to it when
/// freed, whatever came before (glibc's `M_MMAP_THRESHOLD`, fixed). By default glibc raises
/// that threshold each time such a block is freed (up to 32 MiB), so after the first
/// component was read and dropped, the next ones (a component read to be compiled, a
/// large request body) land in a malloc arena and keep its pages resident after they are
/// freed: a server's RSS stepped by about a component's size at each promote. Blocks of
/// that size are rare on the request path, so mapping them costs little. A no-op on
/// other C libraries; called once at the start of `kiln serve`.
pub fn return_large_blocks_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes plain integers and has no preconditions; it only changes
        // a tuning parameter of the allocator.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
    }
}

/// Asks the kernel to reclaim the resident pages of `range` (Linux's `MADV_PAGEOUT`):
/// pages of a file mapping (compiled code mapped from the AOT cache) leave the process's
/// RSS and are read back on their next use; anonymous pages are kept (without swap) or
/// swapped. The contents never change, so it is safe on memory in use; only pages wholly
/// inside `range` are named. Returns whether the kernel took the advice (Linux 5.4 and
/// later; a no-op elsewhere).
pub fn page_out(range: std::ops::Range<*const u8>) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Some((page, pages)) = whole_pages(range) else {
            return false;
        };
        // SAFETY: the pages lie within `range`, memory the caller holds mapped;
        // MADV_PAGEOUT only reclaims pages and never changes what they read.
        unsafe {
            libc::madvise(
                (pages.start * page) as *mut libc::c_void,
                pages.len() * page,
                libc::MADV_PAGEOUT,
            ) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = range;
        false
    }
}

/// Unmaps from this process the pages of `range` that are mapped unchanged from a file
/// (`MADV_DONTNEED` on each run of them, found in `/proc/self/pagemap`), and returns how
/// many. [`page_out`] skips a page that is also mapped elsewhere, and nodes that share one
/// machine and one AOT cache map the same file: there a stood-by version's code stayed in
/// every node's RSS. Unmapping leaves the page in the page cache (the kernel reclaims it
/// when no process maps it) and the next use maps it back from the file with the same
/// contents. Pages this process changed (its private copies) are left alone: dropping
/// them would lose the changes. Use it only on memory that nothing writes (published
/// code). A no-op (0) where pagemap cannot be read or on other systems.
pub fn unmap_file_pages(range: std::ops::Range<*const u8>) -> usize {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::FileExt;
        let Some((page, std::ops::Range { start: first, end })) = whole_pages(range) else {
            return 0;
        };
        let Ok(pagemap) = std::fs::File::open("/proc/self/pagemap") else {
            return 0;
        };
        // Bit 63: present; bit 61: a file page (or shared anonymous memory, which a private
        // file mapping does not hold). A private copy made by a write is anonymous.
        const PRESENT: u64 = 1 << 63;
        const FILE: u64 = 1 << 61;
        let mut unmapped = 0;
        let mut run: Option<usize> = None;
        let mut entries = vec![0u8; 8 * 4096];
        let mut flush = |from: usize, to: usize| {
            // SAFETY: pages `from..to` lie inside `range`, memory the caller holds mapped
            // and promised nothing writes; every one of them is an unchanged file page, so
            // dropping it only unmaps it and the next access maps the same bytes back.
            if unsafe {
                libc::madvise(
                    (from * page) as *mut libc::c_void,
                    (to - from) * page,
                    libc::MADV_DONTNEED,
                )
            } == 0
            {
                unmapped += to - from;
            }
        };
        let mut at = first;
        while at < end {
            let n = (end - at).min(entries.len() / 8);
            let Ok(()) = pagemap.read_exact_at(&mut entries[..n * 8], (at * 8) as u64) else {
                break;
            };
            for (i, entry) in entries[..n * 8].chunks_exact(8).enumerate() {
                let bits = u64::from_ne_bytes(entry.try_into().unwrap_or_default());
                let p = at + i;
                match (bits & (PRESENT | FILE) == PRESENT | FILE, run) {
                    (true, None) => run = Some(p),
                    (false, Some(from)) => {
                        flush(from, p);
                        run = None;
                    }
                    _ => {}
                }
            }
            at += n;
        }
        if let Some(from) = run {
            flush(from, at);
        }
        unmapped
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = range;
        0
    }
}

/// The page size and the numbers of the pages wholly inside `range` (page `n` starts at
/// `n * page`); `None` when there are none.
#[cfg(target_os = "linux")]
fn whole_pages(range: std::ops::Range<*const u8>) -> Option<(usize, std::ops::Range<usize>)> {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let pages = (range.start as usize).div_ceil(page)..range.end as usize / page;
    (!pages.is_empty()).then_some((page, pages))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn unmapping_file_pages_keeps_private_copies_and_the_file_s_bytes() {
        let page = 4096;
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &[7u8; 4 * 4096]).unwrap();
        // SAFETY: a fresh private mapping of a file we own; only this test uses it.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        }
        .cast::<u8>();
        assert_ne!(at.cast(), libc::MAP_FAILED);
        // SAFETY: every offset is inside the 4-page mapping.
        unsafe {
            at.write_volatile(1); // page 0: a private copy
            assert_eq!(at.add(page).read_volatile(), 7); // pages 1 and 2: file pages
            assert_eq!(at.add(2 * page).read_volatile(), 7);
        }
        let range = at.cast_const()..at.cast_const().wrapping_add(4 * page);
        // Pages 1 and 2, and page 3 when the kernel mapped it around their faults; never
        // the private copy.
        let unmapped = unmap_file_pages(range.clone());
        assert!((2..=3).contains(&unmapped), "{unmapped} pages unmapped");
        assert_eq!(unmap_file_pages(range), 0, "nothing left but the private copy");
        // SAFETY: as above.
        unsafe {
            assert_eq!(at.read_volatile(), 1, "the private copy is kept");
            assert_eq!(
                at.add(page).read_volatile(),
                7,
                "a dropped page reads the file again"
            );
            assert_eq!(at.add(3 * page).read_volatile(), 7);
            libc::munmap(at.cast(), 4 * page);
        }
    }
}
