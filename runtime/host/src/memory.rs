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
