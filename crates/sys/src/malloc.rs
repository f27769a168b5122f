//! The C allocator's tuning (glibc's malloc; the agent's binary, static or not, links glibc). No-ops elsewhere.
//!
//! glibc gives every thread that allocates while the others hold their arena's lock an arena of its own, up to eight
//! per core; each grows and fragments on its own, and freed memory inside an arena goes back to the kernel only
//! when it lies at the top. For a process like the agent (a few event loops, a cache of the cluster) this costs more
//! resident memory than it saves lock contention.

/// Limits malloc to `arenas` arenas (`M_ARENA_MAX`). Call first thing in `main`, before other threads start.
/// Returns whether the allocator took the setting.
pub fn limit_arenas(arenas: u16) -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets a tunable of the allocator; it takes its own lock and has no memory-safety
        // preconditions.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, i32::from(arenas)) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = arenas;
        false
    }
}

/// Gives the free memory of every arena back to the kernel (`malloc_trim(0)`): the pages of freed blocks, not only
/// the top of the heap. Returns whether any memory was released. Costs a walk over the heap: call it after bursts
/// (a list of the whole cluster) or now and then, not per request.
pub fn trim() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim takes the arenas' locks itself and only returns free pages; no preconditions.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        assert_eq!(super::limit_arenas(8), cfg!(target_env = "gnu"));
        // Whether anything was released depends on the heap; the call must simply work.
        let big: Vec<Vec<u8>> = (0..1000).map(|_| vec![1u8; 4096]).collect();
        drop(big);
        let _ = super::trim();
    }
}
