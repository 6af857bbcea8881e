//! The `[engine]` section: shards and their I/O driver, connection limits, the protocol
//! listeners, MQTT session limits (`[engine.session]`) and flow control (`[engine.flow]`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Which I/O driver the shards run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring when the kernel allows it, epoll otherwise.
    Auto,
    /// io_uring only; start-up fails without it.
    IoUring,
    /// epoll only.
    Epoll,
}

/// What happens to a device's publication when the upstream queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamPolicy {
    /// Stop reading that device's socket until the queue has room (nothing is lost; the
    /// device is slowed down by TCP flow control).
    Backpressure,
    /// Drop the publication and count it.
    Drop,
}

/// One listener: an address and whether it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Listener {
    /// Whether the listener is opened.
    pub enabled: bool,
    /// Address and port.
    pub listen: SocketAddr,
}

impl Listener {
    fn on(port: u16) -> Self {
        Listener {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], port)),
        }
    }
}

impl Default for Listener {
    fn default() -> Self {
        Listener::on(0)
    }
}

/// `[engine.session]`: limits of MQTT sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionConfig {
    /// Shortest keep-alive accepted, seconds. MQTT 3.1.1 clients outside the range are refused
    /// with CONNACK 0x02 (spec/device-protocol.md §3.6); MQTT 5 clients get a Server Keep Alive.
    pub keepalive_min_secs: u16,
    /// Longest keep-alive accepted, seconds (0 — no keep-alive — is outside the range).
    pub keepalive_max_secs: u16,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u16,
    /// Largest MQTT packet accepted or sent, bytes (spec: reports up to 1 MB).
    pub max_packet_size: u32,
    /// QoS 1/2 messages in flight to one device before the rest queue (and the Receive
    /// Maximum announced to MQTT 5 clients).
    pub receive_maximum: u16,
    /// Messages queued for one device beyond those in flight, online or offline.
    pub max_queued_messages: u32,
    /// Longest session expiry granted, seconds; an MQTT 3.1.1 persistent session gets this.
    pub max_session_expiry_secs: u32,
    /// Topic aliases an MQTT 5 client may use towards fleetgate.
    pub topic_alias_maximum: u16,
    /// For sign type 1: hours the client id's timestamp may differ from the server clock.
    pub auth_window_hours: u32,
    /// Devices whose credentials are cached in memory.
    pub credential_cache_capacity: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            keepalive_min_secs: 10,
            keepalive_max_secs: 1200,
            connect_timeout_secs: 10,
            max_packet_size: 1 << 20,
            receive_maximum: 32,
            max_queued_messages: 1000,
            max_session_expiry_secs: 7 * 86_400,
            topic_alias_maximum: 16,
            auth_window_hours: 1,
            credential_cache_capacity: 10_000,
        }
    }
}

/// `[engine.flow]`: token buckets. A rate of 0 means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowConfig {
    /// Messages per second a device may publish (a product may set its own).
    pub device_messages_per_sec: u32,
    /// Messages a device may publish in a burst.
    pub device_message_burst: u32,
    /// Payload bytes per second a device may publish (a product may set its own).
    pub device_bytes_per_sec: u32,
    /// Payload bytes a device may publish in a burst.
    pub device_byte_burst: u32,
    /// New connections per second per listener (all shards together).
    pub listener_connects_per_sec: u32,
    /// New connections a listener accepts in a burst.
    pub listener_connect_burst: u32,
    /// Seconds a device may stay over its budget, slowed down by unread input, before it is
    /// refused (MQTT 5 reason codes 0x96 / 0x97; MQTT 3.1.1 devices are disconnected);
    /// 0 refuses at once.
    pub max_throttle_secs: u32,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            device_messages_per_sec: 100,
            device_message_burst: 200,
            device_bytes_per_sec: 1 << 20,
            device_byte_burst: 4 << 20,
            listener_connects_per_sec: 10_000,
            listener_connect_burst: 20_000,
            max_throttle_secs: 10,
        }
    }
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Reactor threads; 0 means one per CPU core.
    pub shards: usize,
    /// I/O driver.
    pub driver: Driver,
    /// Most device connections at once; 0 sizes it from the process's file limit, keeping room
    /// for storage and the API. Connections beyond it are answered "server unavailable".
    pub max_connections: usize,
    /// Storage worker threads (credential look-ups, status writes).
    pub workers: usize,
    /// Messages waiting in each shard's inbox.
    pub inbox_capacity: usize,
    /// Events waiting in the upstream queue (publications, connects, disconnects).
    pub upstream_capacity: usize,
    /// What a full upstream queue does to publications.
    pub upstream_policy: UpstreamPolicy,
    /// Seconds after a disconnect before an MQTT device is marked OFFLINE (spec: 60).
    pub offline_grace_secs: u32,
    /// MQTT session limits.
    pub session: SessionConfig,
    /// Flow control.
    pub flow: FlowConfig,
    /// Asynchronous commands and the command cache.
    pub commands: crate::commands::CommandsConfig,
    /// CoAP reliability, LwM2M registrations and sleeping devices.
    pub lwm2m: crate::coap::Lwm2mConfig,
    /// Device MQTT (spec: 1883).
    pub mqtt: Listener,
    /// Device MQTT over TLS (spec: 8883).
    pub mqtts: Listener,
    /// Device MQTT over WebSocket (spec: 8083).
    pub mqtt_ws: Listener,
    /// CoAP / LwM2M (spec: 5683).
    pub coap: Listener,
    /// CoAP over DTLS (spec: 5684).
    pub coaps: Listener,
    /// Device HTTPS API (spec: 8943).
    pub device_https: Listener,
    /// Application-side MQTT (spec: 1884).
    pub app_mqtt: Listener,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 0,
            driver: Driver::Auto,
            max_connections: 0,
            workers: 4,
            inbox_capacity: 65_536,
            upstream_capacity: 65_536,
            upstream_policy: UpstreamPolicy::Backpressure,
            offline_grace_secs: 60,
            session: SessionConfig::default(),
            flow: FlowConfig::default(),
            commands: Default::default(),
            lwm2m: Default::default(),
            mqtt: Listener::on(1883),
            mqtts: Listener::on(8883),
            mqtt_ws: Listener::on(8083),
            coap: Listener::on(5683),
            coaps: Listener::on(5684),
            device_https: Listener::on(8943),
            app_mqtt: Listener::on(1884),
        }
    }
}

/// Whether a listener speaks UDP (CoAP) rather than TCP; the two may share a port number.
fn udp(name: &str) -> bool {
    matches!(name, "coap" | "coaps")
}

impl EngineConfig {
    /// The listeners with their keys.
    pub fn listeners(&self) -> [(&'static str, &Listener); 7] {
        [
            ("mqtt", &self.mqtt),
            ("mqtts", &self.mqtts),
            ("mqtt_ws", &self.mqtt_ws),
            ("coap", &self.coap),
            ("coaps", &self.coaps),
            ("device_https", &self.device_https),
            ("app_mqtt", &self.app_mqtt),
        ]
    }

    /// The shard count to run: the configured one, or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }

    /// Every problem with the section, as `key: reason` lines. `other_tcp` lists TCP ports
    /// owned by other sections (the application API) that listeners may not reuse.
    pub fn validate(&self, other_tcp: &[(&str, SocketAddr)]) -> Vec<String> {
        let mut p = Vec::new();
        let mut range = |key: &str, v: u64, min: u64, max: u64| {
            if v < min || v > max {
                p.push(format!("engine.{key}: must be between {min} and {max}"));
            }
        };
        range("shards", self.shards as u64, 0, 1024);
        range("workers", self.workers as u64, 1, 256);
        range("inbox_capacity", self.inbox_capacity as u64, 16, 1 << 24);
        range(
            "upstream_capacity",
            self.upstream_capacity as u64,
            16,
            1 << 24,
        );
        range(
            "offline_grace_secs",
            u64::from(self.offline_grace_secs),
            0,
            86_400,
        );
        let s = &self.session;
        range(
            "session.keepalive_min_secs",
            u64::from(s.keepalive_min_secs),
            1,
            65_535,
        );
        range(
            "session.connect_timeout_secs",
            u64::from(s.connect_timeout_secs),
            1,
            600,
        );
        range(
            "session.max_packet_size",
            u64::from(s.max_packet_size),
            1024,
            268_435_455,
        );
        range(
            "session.receive_maximum",
            u64::from(s.receive_maximum),
            1,
            65_535,
        );
        range(
            "session.max_queued_messages",
            u64::from(s.max_queued_messages),
            0,
            1_000_000,
        );
        range(
            "session.auth_window_hours",
            u64::from(s.auth_window_hours),
            0,
            8_760,
        );
        range(
            "session.credential_cache_capacity",
            s.credential_cache_capacity as u64,
            0,
            100_000_000,
        );
        range(
            "flow.max_throttle_secs",
            u64::from(self.flow.max_throttle_secs),
            0,
            86_400,
        );
        if s.keepalive_max_secs < s.keepalive_min_secs {
            p.push("engine.session.keepalive_max_secs: must be at least keepalive_min_secs".into());
        }
        let f = &self.flow;
        for (key, rate, burst) in [
            (
                "device_message_burst",
                f.device_messages_per_sec,
                f.device_message_burst,
            ),
            (
                "device_byte_burst",
                f.device_bytes_per_sec,
                f.device_byte_burst,
            ),
            (
                "listener_connect_burst",
                f.listener_connects_per_sec,
                f.listener_connect_burst,
            ),
        ] {
            if rate > 0 && burst == 0 {
                p.push(format!(
                    "engine.flow.{key}: must be at least 1 when the rate is limited"
                ));
            }
            if burst > i32::MAX as u32 {
                p.push(format!("engine.flow.{key}: at most {}", i32::MAX));
            }
        }
        let mut used: BTreeMap<(bool, u16), String> = BTreeMap::new();
        for (key, addr) in other_tcp {
            if addr.port() != 0 {
                used.insert((false, addr.port()), (*key).to_owned());
            }
        }
        for (name, l) in self.listeners() {
            if !l.enabled || l.listen.port() == 0 {
                continue;
            }
            let key = format!("engine.{name}.listen");
            if let Some(other) = used.insert((udp(name), l.listen.port()), key.clone()) {
                p.push(format!(
                    "{key}: port {} is already used by {other}",
                    l.listen.port()
                ));
            }
        }
        p.extend(self.commands.validate());
        p.extend(self.lwm2m.validate());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec_ports_and_are_valid() {
        let c = EngineConfig::default();
        let ports: Vec<_> = c.listeners().iter().map(|(_, l)| l.listen.port()).collect();
        assert_eq!(ports, [1883, 8883, 8083, 5683, 5684, 8943, 1884]);
        assert!(
            c.validate(&[("api.listen", "0.0.0.0:8080".parse().unwrap())])
                .is_empty()
        );
        assert!(c.shard_count() >= 1);
    }

    #[test]
    fn problems_are_reported() {
        let mut c = EngineConfig::default();
        c.mqtts.listen.set_port(1883);
        c.coap.listen.set_port(1883);
        c.session.keepalive_max_secs = 5;
        c.flow.device_message_burst = 0;
        let problems = c.validate(&[("api.listen", "0.0.0.0:1884".parse().unwrap())]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("engine.mqtts.listen"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("engine.app_mqtt.listen"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("engine.session.keepalive_max_secs"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("engine.flow.device_message_burst"))
        );
    }
}
