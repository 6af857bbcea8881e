//! The `[engine]` section: shard count, I/O driver and the protocol listeners.

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

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Reactor threads; 0 means one per CPU core.
    pub shards: usize,
    /// I/O driver.
    pub driver: Driver,
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

    /// Every problem with the section, as `key: reason` lines. `other_tcp` lists TCP ports
    /// owned by other sections (the application API) that listeners may not reuse.
    pub fn validate(&self, other_tcp: &[(&str, SocketAddr)]) -> Vec<String> {
        let mut p = Vec::new();
        if self.shards > 1024 {
            p.push("engine.shards: at most 1024".to_owned());
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
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec_ports() {
        let c = EngineConfig::default();
        let ports: Vec<_> = c.listeners().iter().map(|(_, l)| l.listen.port()).collect();
        assert_eq!(ports, [1883, 8883, 8083, 5683, 5684, 8943, 1884]);
        assert!(
            c.validate(&[("api.listen", "0.0.0.0:8080".parse().unwrap())])
                .is_empty()
        );
    }

    #[test]
    fn port_clashes_are_reported() {
        let mut c = EngineConfig::default();
        c.mqtts.listen.set_port(1883);
        c.coap.listen.set_port(1883);
        let problems = c.validate(&[("api.listen", "0.0.0.0:1884".parse().unwrap())]);
        assert_eq!(problems.len(), 2, "{problems:?}");
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
    }
}
