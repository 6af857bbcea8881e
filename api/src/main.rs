//! The `fleetgate` binary. Everything lives in the library; see `fleetgate --help`.
//!
//! The global allocator is the system's: measured against mimalloc on idle sessions it spends
//! less memory per connection and grows linearly (docs/decisions.md, "Allocator").

use std::process::ExitCode;

fn main() -> ExitCode {
    fleetgate_api::cli::main()
}
