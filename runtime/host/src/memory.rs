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
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let start = (range.start as usize).div_ceil(page) * page;
        let end = range.end as usize / page * page;
        if end <= start {
            return false;
        }
        // SAFETY: the range is page-aligned and lies within `range`, memory the caller
        // holds mapped; MADV_PAGEOUT only reclaims pages and never changes what they read.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = range;
        false
    }
}
