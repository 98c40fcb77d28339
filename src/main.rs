//! The `tessera` binary: parse the command line and run it (`tessera::cli`); the allocator and
//! dropping start-up code from memory live here.

use clap::Parser;

#[allow(unsafe_code)] // madvise: see the module's doc
mod residency;

/// jemalloc, configured in `.cargo/config.toml` (`JEMALLOC_SYS_WITH_MALLOC_CONF`) to give freed
/// memory back within about a second from a background thread. With glibc's malloc, a flood of
/// streams or connections left the daemon at its peak size for good (free pages in the middle
/// of the heap are never returned; `malloc_trim` would need unsafe FFI).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// User-facing errors print their message and fix, never a backtrace, even under
/// `RUST_BACKTRACE=1` (anyhow's `Debug` form would print one).
fn main() -> std::process::ExitCode {
    let once_serving = || {
        let bytes = residency::trim_code();
        tracing::debug!(bytes, "start-up code dropped from memory (see src/residency.rs)");
    };
    match tessera::cli::run(tessera::cli::Cli::parse(), once_serving) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
