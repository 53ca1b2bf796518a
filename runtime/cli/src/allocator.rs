//! Tuning of the host's allocator (mimalloc, set as the global allocator by the binary).
//!
//! Batches are large (tens of MiB) and short-lived. With mimalloc's default purge delay of
//! 10 ms, freed batch memory goes back to the OS between batches and is faulted in again for
//! the next one: on the 10M-row feature benchmark that was 2.5 s of system time out of 8 s.
//! Holding freed memory for a second removes that churn while still returning memory to the
//! OS when a run goes idle.

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same index in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory is kept before it is returned to the OS, in milliseconds.
pub const PURGE_DELAY_MS: i64 = 1000;

/// Applies Quiver's mimalloc settings. Call once at the start of `main` in a program whose
/// global allocator is `mimalloc::MiMalloc`; an environment variable `MIMALLOC_PURGE_DELAY`
/// set by the user wins.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide tuning option; called before the worker threads start.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
}
