//! A panic injected on request, to show that the node notices and recovers (debug builds
//! only: release builds compile the switch to a constant `false`).

#[cfg(debug_assertions)]
static INJECTED_PANIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the controllers panic at the start of their next pass (debug builds only).
#[cfg(debug_assertions)]
pub fn inject_panic() {
    INJECTED_PANIC.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether a panic was injected since the last call.
pub(crate) fn take_injected_panic() -> bool {
    #[cfg(debug_assertions)]
    {
        INJECTED_PANIC.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}
