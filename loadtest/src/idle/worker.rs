//! A worker process of `idle-connections`: opens its share of the connections at its share of
//! the rate, each bound to one of the source addresses, authenticates them, with `subscribe`
//! subscribes each to its own command topic, and holds them idle (PINGREQ every keep-alive)
//! until told to stop. One current-thread tokio runtime; one small task per connection, holding
//! no read buffer between packets beyond a 64-byte stack array (the subscription's filter and
//! packet exist only until its SUBACK).
//!
//! Started by the coordinator (`idle-connections --worker I/P`), which feeds it commands on
//! standard input and reads events from its standard output.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::protocol::{Command, Counts, Event, WorkerInit, WorkerReport, WorkerShare};
use crate::credentials::{Identities, MqttCredentials, device_id, device_topic};
use crate::mqtt::{
    CONNACK_LEN, ConnAck, Connect, DISCONNECT, PINGREQ, SUBACK_LEN, Scanner, SubAck, packet_type,
};
use crate::procfs;
use crate::scenario::{IdleScenario, share};
use crate::stats::latency_histogram;

/// Writes one event to the coordinator.
fn emit(event: &Event) {
    crate::pool::emit_line(event);
}

/// Runs a worker: reads its [`WorkerInit`] and commands from standard input.
pub fn run(share: WorkerShare) -> anyhow::Result<()> {
    crate::pool::serve_worker::<_, _, Event, _>(
        share,
        |init: &WorkerInit| init.scenario.processes,
        Command::Stop,
        |init, cmd_rx| Worker::new(init, share).run(cmd_rx),
    )
}

/// Counters the connection tasks update directly (they are hot during the hold).
#[derive(Debug, Default)]
struct Shared {
    pings_sent: AtomicU64,
    pingresps: AtomicU64,
}

/// The packet id of the one SUBSCRIBE of a connection.
const SUBSCRIBE_PACKET_ID: u16 = 1;
/// The QoS each connection subscribes at.
pub const SUBSCRIBE_QOS: u8 = 1;
/// The command topic filter of one device under `root` (the scenario's `topic_root`):
/// `{root}/devices/{device_id}/sys/commands/#` (fleetgate allows a device this filter under
/// `$oc`, spec/device-protocol.md; plain brokers allow anything they accept at all). With
/// `{device_id}` as the device it is the filter as the report shows it.
pub fn command_filter(root: &str, device_id: &str) -> String {
    device_topic(root, device_id, "commands/#")
}

/// How a connection got established.
#[derive(Debug, Clone, Copy)]
struct Established {
    /// connect() to CONNACK 0, microseconds.
    connack_us: u64,
    /// With `subscribe`: SUBSCRIBE to SUBACK, microseconds, and the QoS granted (0 or 1).
    suback: Option<(u64, u8)>,
}

/// What a connection task reports to the worker loop.
#[derive(Debug)]
enum ConnEvent {
    /// CONNACK 0 (and with `subscribe`, a SUBACK granting QoS 0 or 1).
    Established(Established),
    /// The attempt failed.
    Failed(String),
    /// An established connection was lost before the stop.
    Dropped(String),
    /// An established connection was closed on the stop.
    Closed,
}

/// Everything one connection task needs (also used by the `reconnect-storm` workers).
#[derive(Debug, Clone)]
pub(crate) struct ConnSpec {
    pub(crate) target: SocketAddr,
    pub(crate) source: Ipv4Addr,
    pub(crate) keepalive: Duration,
    pub(crate) timeout: Duration,
}

impl ConnSpec {
    /// A connection to `target` from 127.0.0.1 (tasks set their own source address).
    pub(crate) fn new(
        target: SocketAddr,
        keepalive_secs: u16,
        connect_timeout_secs: u64,
    ) -> ConnSpec {
        ConnSpec {
            target,
            source: Ipv4Addr::LOCALHOST,
            keepalive: Duration::from_secs(u64::from(keepalive_secs)),
            timeout: Duration::from_secs(connect_timeout_secs),
        }
    }
}

#[derive(Debug)]
struct Worker {
    scenario: IdleScenario,
    share: WorkerShare,
    deadline: Duration,
    ids: Identities,
    counts: Counts,
    failures: BTreeMap<String, u64>,
    dropped: BTreeMap<String, u64>,
    histogram: hdrhistogram::Histogram<u64>,
    suback_histogram: hdrhistogram::Histogram<u64>,
    granted_qos: BTreeMap<u8, u64>,
    shared: Arc<Shared>,
}

impl Worker {
    fn new(init: WorkerInit, share: WorkerShare) -> Worker {
        let s = init.scenario;
        Worker {
            ids: Identities {
                product: s.product.clone(),
                seed: s.seed,
                sign_type: s.sign_type,
                auth: s.auth,
            },
            scenario: s,
            share,
            deadline: Duration::from_secs(init.deadline_secs),
            counts: Counts::default(),
            failures: BTreeMap::new(),
            dropped: BTreeMap::new(),
            histogram: latency_histogram(),
            suback_histogram: latency_histogram(),
            granted_qos: BTreeMap::new(),
            shared: Arc::new(Shared::default()),
        }
    }

    fn snapshot(&self) -> Counts {
        Counts {
            pings_sent: self.shared.pings_sent.load(Ordering::Relaxed),
            pingresps: self.shared.pingresps.load(Ordering::Relaxed),
            ..self.counts
        }
    }

    fn on_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Established(e) => {
                self.counts.established += 1;
                self.counts.alive += 1;
                let _ = self.histogram.record(e.connack_us.max(1));
                if let Some((us, qos)) = e.suback {
                    let _ = self.suback_histogram.record(us.max(1));
                    *self.granted_qos.entry(qos).or_default() += 1;
                }
            }
            ConnEvent::Failed(reason) => {
                self.counts.failed += 1;
                *self.failures.entry(reason).or_default() += 1;
            }
            ConnEvent::Dropped(reason) => {
                self.counts.alive -= 1;
                *self.dropped.entry(reason).or_default() += 1;
            }
            ConnEvent::Closed => self.counts.alive -= 1,
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
        let s = self.scenario.clone();
        let p = u64::from(self.share.processes);
        let rate = s.rate as f64 / p as f64;
        let mine = share(s.count, self.share.index, self.share.processes);
        let (ev_tx, mut ev_rx) = mpsc::channel::<ConnEvent>(4096);
        let (stop_tx, stop_rx) = watch::channel(false);
        let spec = ConnSpec::new(s.target, s.keepalive_secs, s.connect_timeout_secs);

        let deadline = tokio::time::sleep(self.deadline);
        tokio::pin!(deadline);
        let mut tick = crate::pool::ticker(Duration::from_millis(1));
        let mut progress = crate::pool::ticker(Duration::from_millis(250));
        let mut target = 0u64;
        let mut step_start = (Instant::now(), 0u64);
        let mut step_open = false;

        loop {
            tokio::select! {
                () = &mut deadline => {
                    emit(&Event::Fatal(format!("worker {} reached its deadline of {:?}", self.share, self.deadline)));
                    break;
                }
                cmd = cmds.recv() => match cmd {
                    Some(Command::Open { until }) => {
                        target = until.min(mine).max(self.counts.attempted);
                        step_start = (Instant::now(), self.counts.attempted);
                        step_open = true;
                    }
                    Some(Command::Status) => emit(&Event::Status(self.snapshot())),
                    Some(Command::Stop) | None => break,
                },
                Some(ev) = ev_rx.recv() => self.on_event(ev),
                _ = tick.tick(), if self.counts.attempted < target => {
                    let elapsed = step_start.0.elapsed().as_secs_f64();
                    let due = (step_start.1 + 1 + (rate * elapsed) as u64).min(target);
                    while self.counts.attempted < due && self.counts.inflight() < s.max_inflight {
                        let g = self.counts.attempted * p + u64::from(self.share.index);
                        let spec = ConnSpec { source: s.source((g % u64::from(s.sources)) as u32), ..spec.clone() };
                        let creds = self.ids.mqtt(g + 1, SystemTime::now());
                        let filter = s.subscribe.then(|| command_filter(&s.topic_root, &device_id(&s.product, g + 1)));
                        tokio::spawn(connection(spec, creds, filter, ev_tx.clone(), Arc::clone(&self.shared), stop_rx.clone()));
                        self.counts.attempted += 1;
                    }
                }
                _ = progress.tick(), if step_open => emit(&Event::Progress(self.snapshot())),
            }
            if step_open && self.counts.attempted >= target && self.counts.inflight() == 0 {
                step_open = false;
                emit(&Event::Reached(self.snapshot()));
            }
        }

        // Stop: every connection sends DISCONNECT and closes; wait a bounded time for them.
        let _ = stop_tx.send(true);
        let until = Instant::now() + Duration::from_secs(5);
        while self.counts.alive > 0 || self.counts.inflight() > 0 {
            match tokio::time::timeout_at(until, ev_rx.recv()).await {
                Ok(Some(ev)) => self.on_event(ev),
                _ => break,
            }
        }
        let cpu = procfs::cpu_ticks("self")
            .map(|t| procfs::CpuSecs::from_ticks(t.user, t.system))
            .unwrap_or_default();
        let pairs = |h: &hdrhistogram::Histogram<u64>| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        let report = WorkerReport {
            counts: self.snapshot(),
            failures: std::mem::take(&mut self.failures),
            dropped: std::mem::take(&mut self.dropped),
            latency_us: pairs(&self.histogram),
            suback_latency_us: pairs(&self.suback_histogram),
            granted_qos: std::mem::take(&mut self.granted_qos),
            cpu,
            memory: procfs::memory(std::process::id()).unwrap_or_default(),
        };
        emit(&Event::Final(Box::new(report)));
    }
}

/// A stable label for an I/O error at a stage of the handshake.
pub(crate) fn label(stage: &str, e: &std::io::Error) -> String {
    format!("{stage}: {}", e.kind())
}

/// Connects from `spec.source` (port chosen at connect time, IP_BIND_ADDRESS_NO_PORT), sends
/// CONNECT and reads CONNACK. Failures are stable labels (`connack 4`, `connect: …`); the
/// `reconnect-storm` workers use it too.
pub(crate) async fn handshake(
    spec: &ConnSpec,
    creds: MqttCredentials,
    keepalive_secs: u16,
) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| label("socket", &e))?;
    setsockopt(&socket, IpBindAddressNoPort, &true)
        .map_err(|e| format!("IP_BIND_ADDRESS_NO_PORT: {e}"))?;
    socket
        .bind(SocketAddr::from((spec.source, 0)))
        .map_err(|e| label("bind", &e))?;
    let mut stream = socket
        .connect(spec.target)
        .await
        .map_err(|e| label("connect", &e))?;
    stream.set_nodelay(true).map_err(|e| label("nodelay", &e))?;
    let packet = Connect {
        client_id: &creds.client_id,
        username: &creds.username,
        password: &creds.password,
        keepalive_secs,
    }
    .encode();
    drop(creds);
    stream
        .write_all(&packet)
        .await
        .map_err(|e| label("write CONNECT", &e))?;
    let mut ack = [0u8; CONNACK_LEN];
    stream
        .read_exact(&mut ack)
        .await
        .map_err(|e| label("read CONNACK", &e))?;
    match ConnAck::decode(ack) {
        Ok(ConnAck::Accepted { .. }) => Ok(stream),
        Ok(ConnAck::Refused(code)) => Err(format!("connack {code}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Subscribes an established connection to `filter` at QoS 1 and reads the SUBACK (MQTT 3.1.1
/// §3.8, §3.9) into a stack array; returns the granted QoS (0 or 1) or a stable failure label
/// (`suback 0x80` for a refusal).
async fn subscribe(stream: &mut TcpStream, filter: &str) -> Result<u8, String> {
    let packet = crate::conn::subscribe(SUBSCRIBE_PACKET_ID, filter, SUBSCRIBE_QOS);
    stream
        .write_all(&packet)
        .await
        .map_err(|e| label("write SUBSCRIBE", &e))?;
    drop(packet);
    let mut ack = [0u8; SUBACK_LEN];
    stream
        .read_exact(&mut ack)
        .await
        .map_err(|e| label("read SUBACK", &e))?;
    match SubAck::decode(ack, SUBSCRIBE_PACKET_ID) {
        Ok(SubAck::Granted(qos)) if qos <= SUBSCRIBE_QOS => Ok(qos),
        Ok(SubAck::Granted(qos)) => Err(format!(
            "suback granted QoS {qos} above the {SUBSCRIBE_QOS} requested"
        )),
        Ok(SubAck::Failure) => Err("suback 0x80".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Handshake (and with a `filter`, the subscription) within `spec.timeout` of the connect().
async fn establish(
    spec: ConnSpec,
    creds: MqttCredentials,
    filter: Option<String>,
) -> Result<(TcpStream, Established), String> {
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let keepalive_secs = u16::try_from(spec.keepalive.as_secs()).unwrap_or(u16::MAX);
    let handshake = handshake(&spec, creds, keepalive_secs);
    let mut stream = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(result) => result?,
        Err(_) => return Err("timeout waiting for CONNACK".into()),
    };
    let connack_us = micros(start.elapsed());
    let Some(filter) = filter else {
        return Ok((
            stream,
            Established {
                connack_us,
                suback: None,
            },
        ));
    };
    let sent = Instant::now();
    let qos = match tokio::time::timeout_at(deadline, subscribe(&mut stream, &filter)).await {
        Ok(result) => result?,
        Err(_) => return Err("timeout waiting for SUBACK".into()),
    };
    Ok((
        stream,
        Established {
            connack_us,
            suback: Some((micros(sent.elapsed()), qos)),
        },
    ))
}

/// A duration in whole microseconds (saturating); the `reconnect-storm` workers use it too.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One connection: handshake (and subscription) within the timeout, then idle until stopped or
/// lost. The establishing part (socket set-up, credentials, CONNECT, the subscription's filter
/// and packets) is a separate boxed future, freed once it is done: the task that lives through
/// the hold keeps only what [`idle`] needs.
fn connection(
    spec: ConnSpec,
    creds: MqttCredentials,
    filter: Option<String>,
    events: mpsc::Sender<ConnEvent>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let keepalive = spec.keepalive;
    let establishing = Box::pin(establish(spec, creds, filter));
    async move {
        let stream = match establishing.await {
            Ok((stream, established)) => {
                if events
                    .send(ConnEvent::Established(established))
                    .await
                    .is_err()
                {
                    return;
                }
                stream
            }
            Err(reason) => {
                let _ = events.send(ConnEvent::Failed(reason)).await;
                return;
            }
        };
        let end = match idle(stream, keepalive, &shared, &mut stop).await {
            Some(reason) => ConnEvent::Dropped(reason),
            None => ConnEvent::Closed,
        };
        let _ = events.send(end).await;
    }
}

/// Holds an established connection: PINGREQ every keep-alive, count what arrives. Returns why
/// it was lost, or `None` when stopped (after sending DISCONNECT).
async fn idle(
    mut stream: TcpStream,
    keepalive: Duration,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut scanner = Scanner::default();
    let mut next_ping = Instant::now() + keepalive;
    let mut buf = [0u8; 64];
    if *stop.borrow() {
        let _ = stream.write_all(&DISCONNECT).await;
        return None;
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_ping) => {
                if let Err(e) = stream.write_all(&PINGREQ).await {
                    return Some(label("write PINGREQ", &e));
                }
                shared.pings_sent.fetch_add(1, Ordering::Relaxed);
                next_ping += keepalive;
            }
            read = stream.read(&mut buf) => match read {
                Ok(0) => return Some("closed by the server".into()),
                Ok(n) => {
                    let before = scanner.count(packet_type::PINGRESP);
                    if !scanner.feed(&buf[..n]) {
                        return Some("invalid MQTT framing from the server".into());
                    }
                    let pongs = scanner.count(packet_type::PINGRESP) - before;
                    shared.pingresps.fetch_add(u64::from(pongs), Ordering::Relaxed);
                }
                Err(e) => return Some(label("read", &e)),
            },
            _ = stop.changed() => {
                let _ = stream.write_all(&DISCONNECT).await;
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_filter_is_the_devices_own() {
        assert_eq!(
            command_filter("$oc", "lt_n000042"),
            "$oc/devices/lt_n000042/sys/commands/#"
        );
        assert_eq!(
            command_filter("oc", "{device_id}"),
            "oc/devices/{device_id}/sys/commands/#"
        );
    }

    #[test]
    fn an_idle_connection_task_stays_small() {
        // The task of one idle connection is this future (plus tokio's task header). Its
        // establishing state (credentials, the subscription's filter, the handshake) lives in
        // a boxed future freed once established, so subscribing costs an idle connection
        // nothing: no larger than the 912 bytes (debug build) of the task before subscriptions
        // existed.
        let (events, _rx) = mpsc::channel(1);
        let (_stop_tx, stop) = watch::channel(false);
        let spec = ConnSpec::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 1)), 60, 1);
        let creds = MqttCredentials {
            client_id: String::new(),
            username: String::new(),
            password: String::new(),
        };
        let task = connection(
            spec,
            creds,
            Some(command_filter("$oc", "lt_n000001")),
            events,
            Arc::new(Shared::default()),
            stop,
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 912, "{size} bytes");
    }
}
