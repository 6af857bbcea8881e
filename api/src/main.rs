//! The `fleetgate` binary. Everything lives in the library; see `fleetgate --help`.

use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    fleetgate_api::cli::main()
}
