//! A CoAP/LwM2M device simulator: the client side of docs/coap.md, written from the contract
//! and independent of fleetgate's server code (CoAP messages through `coap-lite`).
//!
//! - [`SimDevice`]: one device with a blocking API for integration tests — register, update,
//!   de-register, answer the observe `GET /19/0/0`, send notifications carrying `watermeter-v1`
//!   reports, answer commands (`POST /19/1/0`) with a configurable [`CommandBehaviour`] and
//!   record them, sleep and wake from a new local port. It owns one UDP socket at a time and a
//!   receive thread for it; its own confirmable messages are retransmitted per RFC 7252 by the
//!   calling thread while it waits (a condition variable, never a busy loop).
//! - [`Fleet`]: the bulk mode for the load test — many devices share each UDP socket, spread
//!   over several `127.0.0.x` source addresses, with compact per-device state (about 40 bytes
//!   plus the location), paced phases (register, wake, de-register) with a bounded in-flight
//!   count, and counters and HDR latency histograms. One I/O thread runs a current-thread tokio
//!   runtime.
//! - [`watermeter`](Report): the `watermeter-v1` frames (report, command, command response).
//!
//! # How many devices share a socket
//!
//! fleetgate identifies a device by its registration location and its tokens, never by its
//! address; it sends to the address of the device's latest datagram. The simulator's own
//! requests are matched by token and message id, so any number of devices can use one socket
//! for them. The server's requests (the observe `GET`, commands) carry neither the location
//! nor a token the device chose, so the fleet gives each *awake* device a socket of its own
//! and hands a socket that way to another device only [`FleetConfig::socket_reuse_delay`]
//! after its previous device fell asleep (set it at or above the server's
//! `awake_window_secs`, or a command meant for the sleeper reaches the newcomer). Sleeping
//! devices hold no socket: a million sleepers need only as many sockets as devices are awake
//! at once. A device woken takes another socket than its last one: the server sees it come
//! back from a new port, as after a NAT rebinding.

mod device;
mod fleet;
mod watermeter;
mod wire;

#[cfg(test)]
mod tests;

pub use device::{
    CommandBehaviour, DeviceOptions, DeviceStats, ReceivedCommand, SimDevice, SimError,
};
pub use fleet::{
    DeviceSet, DeviceSnapshot, DeviceState, Fleet, FleetCommandBehaviour, FleetConfig,
    FleetCounters, FleetLatencies, Pacing, PhaseReport, WakeBy, node_id,
};
pub use watermeter::{Command, FrameError, Report};
pub use wire::{Code, Lwm2mVersion, Transmission};
