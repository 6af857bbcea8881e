//! Engine metrics: each shard counts into its own [`ShardMetrics`] (relaxed atomics written by
//! that shard only), and a scrape sums every shard into a [`Snapshot`] that the binary renders
//! for Prometheus. Labels come from closed enums, so their cardinality is bounded.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

macro_rules! labels {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant,)* }
        impl $name {
            /// Every value, in label order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// How many values there are.
            pub const COUNT: usize = Self::ALL.len();
            /// The label value.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }
    };
}

labels! {
    /// MQTT control packet types, for packet counters.
    PacketKind {
        Connect => "connect", ConnAck => "connack", Publish => "publish", PubAck => "puback",
        PubRec => "pubrec", PubRel => "pubrel", PubComp => "pubcomp", Subscribe => "subscribe",
        SubAck => "suback", Unsubscribe => "unsubscribe", UnsubAck => "unsuback",
        PingReq => "pingreq", PingResp => "pingresp", Disconnect => "disconnect", Auth => "auth",
    }
}

labels! {
    /// Why a connection ended.
    CloseReason {
        ClientDisconnect => "client_disconnect",
        ClientGone => "client_gone",
        KeepaliveTimeout => "keepalive_timeout",
        ConnectTimeout => "connect_timeout",
        ProtocolError => "protocol_error",
        AuthFailed => "auth_failed",
        TakenOver => "taken_over",
        Kicked => "kicked",
        Throttled => "throttled",
        ServerBusy => "server_busy",
        ServerShutdown => "server_shutdown",
        TransportError => "transport_error",
    }
}

labels! {
    /// Why an authentication failed.
    AuthFailure {
        UnsupportedProtocol => "unsupported_protocol",
        MalformedClientId => "malformed_client_id",
        KeepaliveOutOfRange => "keepalive_out_of_range",
        BadCredentials => "bad_credentials",
        NotAuthorized => "not_authorized",
        Unavailable => "server_unavailable",
    }
}

labels! {
    /// What an ACL refused.
    AclAction {
        Publish => "publish",
        Subscribe => "subscribe",
    }
}

labels! {
    /// How flow control acted.
    Throttle {
        Paused => "paused",
        RefusedRate => "refused_rate",
        RefusedQuota => "refused_quota",
        ConnectRate => "connect_rate",
        MaxConnections => "max_connections",
    }
}

labels! {
    /// Plain counters.
    Counter {
        ConnectionsOpened => "connections_opened",
        BytesIn => "bytes_in",
        BytesOut => "bytes_out",
        UpstreamDropped => "upstream_dropped",
        UpstreamStalled => "upstream_stalled",
        QueueDropped => "queue_dropped",
        Undeliverable => "undeliverable",
        WillsPublished => "wills_published",
        SessionsResumed => "sessions_resumed",
        SessionsExpired => "sessions_expired",
        AcceptErrors => "accept_errors",
    }
}

fn array<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// One shard's counters.
#[derive(Debug)]
pub struct ShardMetrics {
    packets_in: [AtomicU64; PacketKind::COUNT],
    packets_out: [AtomicU64; PacketKind::COUNT],
    closed: [AtomicU64; CloseReason::COUNT],
    auth_failures: [AtomicU64; AuthFailure::COUNT],
    acl_denied: [AtomicU64; AclAction::COUNT],
    throttled: [AtomicU64; Throttle::COUNT],
    counters: [AtomicU64; Counter::COUNT],
    connections: AtomicI64,
    detached: AtomicI64,
    inflight: AtomicI64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            packets_in: array(),
            packets_out: array(),
            closed: array(),
            auth_failures: array(),
            acl_denied: array(),
            throttled: array(),
            counters: array(),
            connections: AtomicI64::new(0),
            detached: AtomicI64::new(0),
            inflight: AtomicI64::new(0),
        }
    }
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

impl ShardMetrics {
    /// Counts a received packet.
    pub fn packet_in(&self, k: PacketKind) {
        bump(&self.packets_in[k as usize], 1);
    }
    /// Counts a sent packet.
    pub fn packet_out(&self, k: PacketKind) {
        bump(&self.packets_out[k as usize], 1);
    }
    /// Counts a closed connection.
    pub fn closed(&self, r: CloseReason) {
        bump(&self.closed[r as usize], 1);
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
    /// Counts an opened connection.
    pub fn opened(&self) {
        self.add(Counter::ConnectionsOpened, 1);
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts an authentication failure.
    pub fn auth_failed(&self, r: AuthFailure) {
        bump(&self.auth_failures[r as usize], 1);
    }
    /// Counts an ACL refusal.
    pub fn acl_denied(&self, a: AclAction) {
        bump(&self.acl_denied[a as usize], 1);
    }
    /// Counts a flow-control action.
    pub fn throttled(&self, t: Throttle) {
        bump(&self.throttled[t as usize], 1);
    }
    /// Adds to a plain counter.
    pub fn add(&self, c: Counter, n: u64) {
        bump(&self.counters[c as usize], n);
    }
    /// Packets of one kind received.
    pub fn packets_in_of(&self, k: PacketKind) -> u64 {
        self.packets_in[k as usize].load(Ordering::Relaxed)
    }
    /// Packets of one kind sent.
    pub fn packets_out_of(&self, k: PacketKind) -> u64 {
        self.packets_out[k as usize].load(Ordering::Relaxed)
    }
    /// A plain counter's value.
    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Ordering::Relaxed)
    }
    /// Changes the number of QoS 1/2 messages in flight.
    pub fn inflight(&self, delta: i64) {
        self.inflight.fetch_add(delta, Ordering::Relaxed);
    }
    /// Changes the number of detached (offline, persistent) sessions.
    pub fn detached(&self, delta: i64) {
        self.detached.fetch_add(delta, Ordering::Relaxed);
    }
}

/// One sample: label pairs and a value.
pub type Sample = (Vec<(&'static str, &'static str)>, f64);

/// One metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Full metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// `true` for counters, `false` for gauges.
    pub counter: bool,
    /// Samples, each with its labels (the `shard` label is added by [`snapshot`]).
    pub samples: Vec<Sample>,
}

/// A family of one unlabelled sample.
pub(crate) fn plain(name: &'static str, help: &'static str, counter: bool, value: f64) -> Family {
    Family {
        name,
        help,
        counter,
        samples: vec![(vec![], value)],
    }
}

fn family(name: &'static str, help: &'static str, counter: bool) -> Family {
    Family {
        name,
        help,
        counter,
        samples: Vec::new(),
    }
}

const SHARD_LABELS: [&str; 64] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32",
    "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47", "48",
    "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61", "62", "63",
];

fn shard_label(i: usize) -> &'static str {
    SHARD_LABELS.get(i).copied().unwrap_or("64+")
}

fn load(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

/// Sums every shard's counters into metric families, with a per-shard breakdown of the
/// connection gauge.
pub fn snapshot(shards: &[&ShardMetrics]) -> Vec<Family> {
    let mut conns = family(
        "fleetgate_mqtt_connections",
        "Open MQTT connections, by shard.",
        false,
    );
    let mut detached = family(
        "fleetgate_mqtt_detached_sessions",
        "Persistent sessions kept for offline devices.",
        false,
    );
    let mut inflight = family(
        "fleetgate_mqtt_inflight_messages",
        "QoS 1/2 messages sent and not yet acknowledged.",
        false,
    );
    let mut pin = family(
        "fleetgate_mqtt_packets_received_total",
        "MQTT packets received, by type.",
        true,
    );
    let mut pout = family(
        "fleetgate_mqtt_packets_sent_total",
        "MQTT packets sent, by type.",
        true,
    );
    let mut closed = family(
        "fleetgate_mqtt_connections_closed_total",
        "MQTT connections closed, by reason.",
        true,
    );
    let mut auth = family(
        "fleetgate_mqtt_auth_failures_total",
        "Refused MQTT connections, by reason.",
        true,
    );
    let mut acl = family(
        "fleetgate_mqtt_acl_denied_total",
        "Publications and subscriptions refused by the ACL.",
        true,
    );
    let mut thr = family(
        "fleetgate_mqtt_throttled_total",
        "Flow-control actions, by kind.",
        true,
    );
    let mut plain: Vec<Family> = Counter::ALL
        .iter()
        .map(|c| {
            let (name, help) = match c {
                Counter::ConnectionsOpened => (
                    "fleetgate_mqtt_connections_opened_total",
                    "MQTT connections accepted.",
                ),
                Counter::BytesIn => (
                    "fleetgate_mqtt_received_bytes_total",
                    "Bytes read from MQTT connections.",
                ),
                Counter::BytesOut => (
                    "fleetgate_mqtt_sent_bytes_total",
                    "Bytes written to MQTT connections.",
                ),
                Counter::UpstreamDropped => (
                    "fleetgate_upstream_dropped_total",
                    "Publications dropped because the upstream queue was full.",
                ),
                Counter::UpstreamStalled => (
                    "fleetgate_upstream_stalled_total",
                    "Times a connection stopped reading because the upstream queue was full.",
                ),
                Counter::QueueDropped => (
                    "fleetgate_mqtt_queue_dropped_total",
                    "Messages for a device dropped because its queue was full.",
                ),
                Counter::Undeliverable => (
                    "fleetgate_mqtt_undeliverable_total",
                    "Messages for a device that was not subscribed to their topic.",
                ),
                Counter::WillsPublished => (
                    "fleetgate_mqtt_wills_published_total",
                    "Will messages published.",
                ),
                Counter::SessionsResumed => (
                    "fleetgate_mqtt_sessions_resumed_total",
                    "Connections that resumed a persistent session.",
                ),
                Counter::SessionsExpired => (
                    "fleetgate_mqtt_sessions_expired_total",
                    "Persistent sessions that expired.",
                ),
                Counter::AcceptErrors => (
                    "fleetgate_mqtt_accept_errors_total",
                    "Failed accepts (file limits and the like).",
                ),
            };
            family(name, help, true)
        })
        .collect();
    let sum = |arrays: &mut dyn Iterator<Item = &AtomicU64>| arrays.map(load).sum::<f64>();
    for (i, m) in shards.iter().enumerate() {
        conns.samples.push((
            vec![("shard", shard_label(i))],
            m.connections.load(Ordering::Relaxed) as f64,
        ));
    }
    detached.samples.push((
        vec![],
        shards
            .iter()
            .map(|m| m.detached.load(Ordering::Relaxed) as f64)
            .sum(),
    ));
    inflight.samples.push((
        vec![],
        shards
            .iter()
            .map(|m| m.inflight.load(Ordering::Relaxed) as f64)
            .sum(),
    ));
    for k in PacketKind::ALL {
        let i = *k as usize;
        pin.samples.push((
            vec![("type", k.label())],
            sum(&mut shards.iter().map(|m| &m.packets_in[i])),
        ));
        pout.samples.push((
            vec![("type", k.label())],
            sum(&mut shards.iter().map(|m| &m.packets_out[i])),
        ));
    }
    for r in CloseReason::ALL {
        let i = *r as usize;
        closed.samples.push((
            vec![("reason", r.label())],
            sum(&mut shards.iter().map(|m| &m.closed[i])),
        ));
    }
    for r in AuthFailure::ALL {
        let i = *r as usize;
        auth.samples.push((
            vec![("reason", r.label())],
            sum(&mut shards.iter().map(|m| &m.auth_failures[i])),
        ));
    }
    for a in AclAction::ALL {
        let i = *a as usize;
        acl.samples.push((
            vec![("action", a.label())],
            sum(&mut shards.iter().map(|m| &m.acl_denied[i])),
        ));
    }
    for t in Throttle::ALL {
        let i = *t as usize;
        thr.samples.push((
            vec![("kind", t.label())],
            sum(&mut shards.iter().map(|m| &m.throttled[i])),
        ));
    }
    for (f, c) in plain.iter_mut().zip(Counter::ALL) {
        let i = *c as usize;
        f.samples
            .push((vec![], sum(&mut shards.iter().map(|m| &m.counters[i]))));
    }
    let mut out = vec![conns, detached, inflight, pin, pout, closed, auth, acl, thr];
    out.append(&mut plain);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_summed() {
        let (a, b) = (ShardMetrics::default(), ShardMetrics::default());
        a.opened();
        b.opened();
        b.opened();
        b.closed(CloseReason::KeepaliveTimeout);
        a.packet_in(PacketKind::Publish);
        b.packet_in(PacketKind::Publish);
        let snap = snapshot(&[&a, &b]);
        let get = |name: &str| snap.iter().find(|f| f.name == name).unwrap().clone();
        assert_eq!(
            get("fleetgate_mqtt_connections").samples,
            vec![(vec![("shard", "0")], 1.0), (vec![("shard", "1")], 1.0)]
        );
        let publish = get("fleetgate_mqtt_packets_received_total");
        assert!(publish.samples.contains(&(vec![("type", "publish")], 2.0)));
        let closed = get("fleetgate_mqtt_connections_closed_total");
        assert!(
            closed
                .samples
                .contains(&(vec![("reason", "keepalive_timeout")], 1.0))
        );
        assert_eq!(
            get("fleetgate_mqtt_connections_opened_total").samples,
            vec![(vec![], 3.0)]
        );
    }
}
