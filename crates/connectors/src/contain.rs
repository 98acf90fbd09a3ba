//! Third-party decoders that panic on some damaged inputs (the `parquet` crate on corrupt pages, `redb` on
//! some truncated files) are called through [`contained`]: their panic becomes an error the caller turns
//! into one naming the file, and the panic hook prints nothing for it. Other panics, on other threads or
//! outside [`contained`], are reported by the hook as before.
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Whether this thread is inside [`contained`] (the hook then stays silent).
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

static QUIET_HOOK: Once = Once::new();

/// Runs `f`; a panic inside it is caught and returned as its message. Installs (once per process) a panic
/// hook that stays silent on a thread inside `contained` and defers to the previous hook otherwise.
pub fn contained<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = CONTAINING.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(outer));
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the decoder panicked")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_is_its_message_and_values_pass_through() {
        assert_eq!(contained(|| 7), Ok(7));
        assert_eq!(contained(|| -> u8 { panic!("bad page {}", 3) }), Err("bad page 3".to_string()));
        assert_eq!(contained(|| contained(|| -> u8 { panic!("inner") })), Ok(Err("inner".to_string())));
        assert!(!CONTAINING.with(Cell::get), "the flag is restored");
    }
}
