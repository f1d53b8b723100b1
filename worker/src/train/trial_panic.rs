//! libtorch errors inside a trial: tch turns them into panics, which end the trial (not the
//! worker) as `Failed` with a short, readable reason.
//!
//! The panic hook matters when memory runs out: the default hook captures a backtrace when
//! `RUST_BACKTRACE` is set, which allocates while the failed allocation's neighbours still hold
//! the memory, and can abort or hang the process. Inside a trial the hook prints one line and
//! nothing else; panics anywhere else keep the default hook (bugs deserve their backtrace).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static IN_TRIAL: Cell<bool> = const { Cell::new(false) };
}

const MAX_REASON: usize = 400;

/// Installs the hook once per process.
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TRIAL.with(Cell::get) {
                let text = info.payload_as_str().unwrap_or("unknown error");
                let line = text.lines().next().unwrap_or(text);
                let cut = line.char_indices().nth(200).map_or(line.len(), |(i, _)| i);
                eprintln!("trial failed: {}", &line[..cut]);
            } else {
                default(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into the reason it failed.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    IN_TRIAL.with(|t| t.set(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    IN_TRIAL.with(|t| t.set(false));
    outcome.map_err(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("libtorch raised an unknown error");
        reason(text)
    })
}

/// The first line of a libtorch error, without tch's `unwrap` wrapping and C++ frames, and
/// named for what it is when memory ran out.
pub fn reason(text: &str) -> String {
    let inner = text
        .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
        .unwrap_or(text);
    let inner = inner
        .strip_prefix("Torch(\"")
        .map(|s| s.trim_end_matches("\")"))
        .unwrap_or(inner);
    // Debug formatting escaped the newlines; the first line is the message.
    let first = inner.split("\\n").next().unwrap_or(inner);
    let first = first.lines().next().unwrap_or(first).trim();
    let first = match first.find("] ") {
        Some(i) if first.starts_with("[enforce fail") => first[i + 2..].trim(),
        _ => first,
    };
    let first = first.strip_prefix("err == 0. ").unwrap_or(first);
    let lower = first.to_lowercase();
    let mut out = if lower.contains("can't allocate memory") || lower.contains("out of memory") {
        format!("out of memory: {first}")
    } else {
        first.to_string()
    };
    if out.len() > MAX_REASON {
        let cut = out
            .char_indices()
            .nth(MAX_REASON)
            .map_or(out.len(), |(i, _)| i);
        out.truncate(cut);
        out.push_str(" ...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short_and_name_out_of_memory() {
        let cpu = "called `Result::unwrap()` on an `Err` value: Torch(\"[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 131072000 bytes. Error code 12 (Cannot allocate memory)\\nframe #0: c10::ThrowEnforceNotMet(char const*, int) + 0x6a (0x7efc in libc10.so)\\nframe #1: ...\")";
        assert_eq!(
            reason(cpu),
            "out of memory: DefaultCPUAllocator: can't allocate memory: you tried to allocate 131072000 bytes. Error code 12 (Cannot allocate memory)"
        );
        let cuda = "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total capacity)\\nException raised from malloc at ...\")";
        assert!(reason(cuda)
            .starts_with("out of memory: CUDA out of memory. Tried to allocate 20.00 GiB"));
        assert_eq!(reason("shape mismatch"), "shape mismatch");
        assert!(reason(&"x".repeat(5000)).len() < MAX_REASON + 10);
    }

    #[test]
    fn a_panic_in_a_trial_becomes_its_reason_and_the_flag_is_cleared() {
        let r = catch(|| -> u32 {
            panic!("called `Result::unwrap()` on an `Err` value: Torch(\"bad shape\\nframe #0\")")
        });
        assert_eq!(r, Err("bad shape".to_string()));
        assert!(!IN_TRIAL.with(Cell::get));
        assert_eq!(catch(|| 7), Ok(7));
    }
}
