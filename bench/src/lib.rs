//! Criterion benchmarks of fleetgate's hot paths; run them with `cargo bench -p fleetgate-bench`.
//! Results and the machine they were measured on go to docs/perf.md. This library only holds
//! shared fixtures.

use fleetgate_model::command::{Command, CommandMode, NewCommand};
use fleetgate_model::device::Device;
use serde_json::json;

/// A delayed command for `device`, created now.
pub fn delayed_command(device: &Device) -> Command {
    let new = NewCommand {
        device_id: device.device_id.clone(),
        app_id: device.app_id.clone(),
        mode: CommandMode::Async,
        service_id: "WaterMeter".parse().ok(),
        command_name: "ON_OFF".parse().unwrap_or_else(|e| panic!("{e}")),
        paras: json!({"value": "ON"}),
        supersede_key: None,
        idempotency_key: None,
    };
    Command::new_delayed(new, 86_400, fleetgate_model::Timestamp::now())
}
