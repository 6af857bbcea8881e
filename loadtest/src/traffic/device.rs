//! One device of a `telemetry` or `command-roundtrip` worker: a tokio task that connects at its
//! turn (and subscribes to its commands in `command-roundtrip`), keeps its connection alive
//! (PINGREQ when nothing else was sent for half the keep-alive), acknowledges whatever the
//! server pushes at QoS 1, answers commands, publishes its share of the reports once the
//! worker's [`Plan`] arrives, and sends DISCONNECT on the stop.
//!
//! Publishing is paced by the plan: the device of rank `r` among the `n` publishing devices of
//! worker `w` of `P` sends reports `g = w + P·(r + j·n)`, each due at `t0 + g / rate`, so the
//! workers together send report `g` at its time whatever their number. At QoS 1 a device never
//! has more than `max_inflight` reports without their PUBACK: with a full window it waits for
//! one (the report goes out late, never skipped, and is counted in `window_delayed`). Nothing
//! is sent after `stop_at` (twice the planned duration: the rest counts as not sent) and no
//! PUBACK is awaited after `drain_until`; every write gives up after a bounded time, so a
//! saturated server can delay a device but never hold it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::command::response_topic;
use crate::conn::{self, Framer, Packet};
use crate::credentials::{Identities, device_id, device_topic};
use crate::mqtt::{DISCONNECT, PINGREQ};
use crate::scenario::Fleet;
use crate::telemetry::{payload, subscribe};

/// How long a write (PINGREQ, PUBACK, an answer) may wait for room in the socket before the
/// connection counts as lost.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// What a device task tells its worker. Every task ends with exactly one of `Failed`, `Lost`
/// or `Closed`.
#[derive(Debug)]
pub(crate) enum DevEvent {
    /// Device `k` (the worker's own numbering) is connected (and subscribed).
    Connected(usize),
    /// The device could not connect, by reason.
    Failed(String),
    /// Device `k` has sent its share of the reports and had its PUBACKs (or stopped waiting).
    PublishDone(usize),
    /// Device `k` lost its connection before the stop, by reason.
    Lost(usize, String),
    /// The device disconnected on the stop.
    Closed,
}

/// What the devices do once connected.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// Publish reports when the plan arrives.
    Publish {
        /// Reports per second, all workers together.
        rate: u64,
        /// QoS of the reports.
        qos: u8,
        /// Reports of the whole run.
        planned: u64,
        /// Payload size.
        payload_bytes: u64,
        /// Unacknowledged QoS 1 reports a device may have.
        max_inflight: u64,
    },
    /// Answer commands; subscribe to them first at QoS 1 unless `command_qos` is 0.
    Answer {
        /// QoS of the SUBSCRIBE (0 = none).
        command_qos: u8,
    },
}

/// Counters the device tasks update directly.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) window_delayed: AtomicU64,
    pub(crate) answered: AtomicU64,
    /// Reports sent per second since `t0`.
    pub(crate) sent_per_sec: Vec<AtomicU64>,
}

impl Shared {
    /// Counters for a run of at most `secs` seconds.
    pub(crate) fn new(secs: u64) -> Shared {
        Shared {
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            window_delayed: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            sent_per_sec: (0..=secs).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// What every device task of a worker shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) ids: Identities,
    pub(crate) fleet: Fleet,
    pub(crate) role: Role,
    /// This worker's index and the number of workers.
    pub(crate) index: u64,
    pub(crate) processes: u64,
    pub(crate) shared: Shared,
    pub(crate) events: mpsc::Sender<DevEvent>,
}

/// Marks a device that publishes nothing in a [`Plan`].
pub(crate) const NO_RANK: u32 = u32::MAX;

/// The worker's publishing plan, sent to every device at once.
#[derive(Debug)]
pub(crate) struct Plan {
    /// When report 0 is due.
    pub(crate) t0: Instant,
    /// No report is sent from then on.
    pub(crate) stop_at: Instant,
    /// No PUBACK is awaited from then on.
    pub(crate) drain_until: Instant,
    /// The rank of each of the worker's devices among its publishing ones, or [`NO_RANK`].
    pub(crate) ranks: Vec<u32>,
    /// How many devices publish (the ranks are `0..publishing`).
    pub(crate) publishing: u64,
}

/// The first report and the step between the reports of the device of `rank` among
/// `publishing` devices of worker `index` of `processes`: reports `first, first + step, …`.
pub(crate) fn reports_of(index: u64, processes: u64, rank: u64, publishing: u64) -> (u64, u64) {
    (index + processes * rank, processes * publishing)
}

/// When report `g` is due: `t0 + g / rate`.
pub(crate) fn due(t0: Instant, g: u64, rate: u64) -> Instant {
    let nanos = u128::from(g) * 1_000_000_000 / u128::from(rate.max(1));
    t0 + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Why a connected device stopped.
enum End {
    Stopped,
    Lost(String),
}

/// A device's publishing, once its plan has arrived.
struct Sending {
    /// The next report to send.
    g: u64,
    step: u64,
    t0: Instant,
    stop_at: Instant,
    drain_until: Instant,
    unacked: u64,
    packet_id: u16,
    done: bool,
}

/// Device `k` of the worker (0-based number `d` over the whole fleet, so device id `d + 1`):
/// connects at `start_at`, then serves until the stop.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    k: usize,
    d: u64,
    start_at: Instant,
    plan: watch::Receiver<Option<Arc<Plan>>>,
    mut stop: watch::Receiver<bool>,
) {
    let event = |ev| {
        let tx = ctx.events.clone();
        async move {
            let _ = tx.send(ev).await;
        }
    };
    let early_stop = tokio::select! {
        () = tokio::time::sleep_until(start_at) => false,
        () = stopped(&mut stop) => true,
    };
    if early_stop {
        return event(DevEvent::Failed("stopped before connecting".into())).await;
    }
    let f = &ctx.fleet;
    let timeout = Duration::from_secs(f.connect_timeout_secs);
    let login = ctx.ids.mqtt(d + 1, SystemTime::now());
    let connected = tokio::select! {
        r = Box::pin(conn::connect(f.source(d), f.target, &login, f.keepalive_secs, timeout)) => r,
        () = stopped(&mut stop) => Err("stopped while connecting".into()),
    };
    let mut stream = match connected {
        Ok(s) => s,
        Err(e) => return event(DevEvent::Failed(e)).await,
    };
    let mut framer = Framer::default();
    if let Role::Answer { command_qos: 1.. } = ctx.role {
        let filter = device_topic(&f.topic_root, &device_id(&f.product, d + 1), "commands/#");
        // Boxed: the SUBSCRIBE's read buffer is not kept in every device's task.
        match Box::pin(subscribe(&mut stream, &mut framer, &filter, 1, timeout)).await {
            Ok(codes) if codes.first().is_some_and(|&c| c <= 1) => {}
            Ok(codes) => {
                return event(DevEvent::Failed(format!(
                    "suback {:?}",
                    Packet::SubAck(1, codes)
                )))
                .await;
            }
            Err(e) => return event(DevEvent::Failed(e)).await,
        }
    }
    event(DevEvent::Connected(k)).await;
    let topic = device_topic(
        &f.topic_root,
        &device_id(&f.product, d + 1),
        "properties/report",
    );
    let end = serve(&ctx, k, &topic, &mut stream, framer, plan, &mut stop).await;
    match end {
        End::Stopped => {
            let _ = write(&mut stream, &DISCONNECT, Instant::now() + WRITE_LIMIT).await;
            event(DevEvent::Closed).await;
        }
        End::Lost(reason) => event(DevEvent::Lost(k, reason)).await,
    }
}

/// Returns once the stop is signalled (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Writes `bytes`, giving up at `until`.
async fn write(stream: &mut TcpStream, bytes: &[u8], until: Instant) -> Result<(), String> {
    match tokio::time::timeout_at(until, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("send: {:?}", e.kind())),
        Err(_) => Err("send: timed out (the server stopped reading)".into()),
    }
}

/// A connected device until the stop or the loss of its connection.
async fn serve(
    ctx: &Ctx,
    k: usize,
    topic: &str,
    stream: &mut TcpStream,
    mut framer: Framer,
    mut plan: watch::Receiver<Option<Arc<Plan>>>,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let f = &ctx.fleet;
    let ping_every = Duration::from_secs(u64::from(f.keepalive_secs) / 2);
    let mut next_ping = Instant::now() + ping_every;
    let mut buf = [0u8; 512];
    let mut waiting_for_plan = matches!(ctx.role, Role::Publish { .. });
    let mut sending: Option<Sending> = None;
    loop {
        if *stop.borrow() {
            return End::Stopped;
        }
        let now = Instant::now();
        if now >= next_ping {
            if let Err(e) = write(stream, &PINGREQ, now + WRITE_LIMIT).await {
                return End::Lost(e);
            }
            next_ping = now + ping_every;
        }
        let mut wake = next_ping;
        if let (
            Some(s),
            Role::Publish {
                rate,
                qos,
                planned,
                payload_bytes,
                max_inflight,
            },
        ) = (sending.as_mut(), ctx.role)
            && !s.done
        {
            if s.g < planned && now >= s.stop_at {
                // Out of time: the rest stays unsent.
                s.g = planned;
            }
            let window_open = qos == 0 || s.unacked < max_inflight;
            if s.g < planned && window_open && due(s.t0, s.g, rate) <= now {
                s.packet_id = s.packet_id.checked_add(1).unwrap_or(1);
                let body = payload(s.g, conn::unix_micros(), payload_bytes);
                let packet = conn::publish(topic, &body, qos, s.packet_id);
                if let Err(e) = write(
                    stream,
                    &packet,
                    s.drain_until.max(now + Duration::from_secs(1)),
                )
                .await
                {
                    return End::Lost(e);
                }
                let sh = &ctx.shared;
                sh.sent.fetch_add(1, Ordering::Relaxed);
                let sec = now.saturating_duration_since(s.t0).as_secs() as usize;
                if let Some(c) = sh.sent_per_sec.get(sec) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                if qos > 0 {
                    s.unacked += 1;
                }
                s.g += s.step;
                next_ping = Instant::now() + ping_every;
                // Next turn: the next report may be due already.
                continue;
            }
            if s.g < planned {
                wake = wake.min(if window_open {
                    due(s.t0, s.g, rate)
                } else {
                    s.stop_at
                });
            } else if s.unacked > 0 && now < s.drain_until {
                wake = wake.min(s.drain_until);
            } else {
                s.done = true;
                let _ = ctx.events.send(DevEvent::PublishDone(k)).await;
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return End::Stopped,
            r = stream.read(&mut buf) => {
                let n = match r {
                    Ok(0) => return End::Lost("closed by the server".into()),
                    Ok(n) => n,
                    Err(e) => return End::Lost(format!("read: {:?}", e.kind())),
                };
                framer.feed(&buf[..n]);
                let out = match handle_packets(ctx, &mut framer, sending.as_mut()) {
                    Ok(out) => out,
                    Err(e) => return End::Lost(e),
                };
                if !out.is_empty() {
                    if let Err(e) = write(stream, &out, Instant::now() + WRITE_LIMIT).await {
                        return End::Lost(e);
                    }
                    next_ping = Instant::now() + ping_every;
                }
            }
            r = plan.changed(), if waiting_for_plan => {
                if r.is_err() {
                    waiting_for_plan = false;
                    continue;
                }
                let p = plan.borrow_and_update().clone();
                if let Some(p) = p {
                    waiting_for_plan = false;
                    let rank = p.ranks.get(k).copied().unwrap_or(NO_RANK);
                    let (first, step) = reports_of(ctx.index, ctx.processes, u64::from(rank), p.publishing);
                    sending = Some(Sending {
                        g: first,
                        step,
                        t0: p.t0,
                        stop_at: p.stop_at,
                        drain_until: p.drain_until,
                        unacked: 0,
                        packet_id: 0,
                        // A device without a rank has nothing to send.
                        done: rank == NO_RANK,
                    });
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Reads every whole packet: PUBACKs open the window, PUBLISHes at QoS 1 are acknowledged and
/// commands answered. Returns what to write back.
fn handle_packets(
    ctx: &Ctx,
    framer: &mut Framer,
    mut sending: Option<&mut Sending>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let now = Instant::now();
    loop {
        match framer.next_packet() {
            Ok(Some(Packet::PubAck(_))) => {
                ctx.shared.acked.fetch_add(1, Ordering::Relaxed);
                if let (
                    Some(s),
                    Role::Publish {
                        rate,
                        planned,
                        max_inflight,
                        ..
                    },
                ) = (sending.as_deref_mut(), ctx.role)
                {
                    // The window was full while the next report was due: it goes out late.
                    if s.unacked >= max_inflight && s.g < planned && due(s.t0, s.g, rate) <= now {
                        ctx.shared.window_delayed.fetch_add(1, Ordering::Relaxed);
                    }
                    s.unacked = s.unacked.saturating_sub(1);
                }
            }
            Ok(Some(Packet::Publish {
                topic,
                qos,
                packet_id,
                ..
            })) => {
                if qos > 0 {
                    out.extend_from_slice(&conn::puback(packet_id));
                }
                if let Role::Answer { .. } = ctx.role
                    && let Some(rt) = response_topic(&topic)
                {
                    out.extend_from_slice(&conn::publish(&rt, b"{\"result_code\":0}", 0, 0));
                    ctx.shared.answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return Ok(out),
            Err(e) => return Err(e.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_ranks_share_every_report_once() {
        for (planned, processes, publishing) in [
            (1000u64, 1u64, vec![7u64]),
            (1000, 2, vec![150, 150]),
            (997, 3, vec![5, 1, 4]),
            (64, 4, vec![1, 2, 3, 0]),
        ] {
            let mut seen = vec![0u32; planned as usize];
            for (w, &n) in publishing.iter().enumerate() {
                for r in 0..n {
                    let (first, step) = reports_of(w as u64, processes, r, n);
                    let mut g = first;
                    while g < planned {
                        seen[g as usize] += 1;
                        g += step;
                    }
                }
            }
            for (g, &c) in seen.iter().enumerate() {
                let owner_publishes = publishing[g % processes as usize] > 0;
                assert_eq!(
                    c,
                    u32::from(owner_publishes),
                    "report {g} of {planned} over {publishing:?}"
                );
            }
        }
    }

    #[test]
    fn with_every_device_up_report_g_goes_to_device_g_mod_count() {
        // 2 workers of 150 devices each (300 devices): worker w's rank r is device w + 2r.
        let (processes, per_worker, count) = (2u64, 150u64, 300u64);
        for g in 0..1000u64 {
            let w = g % processes;
            let r = (g / processes) % per_worker;
            let (first, step) = reports_of(w, processes, r, per_worker);
            assert_eq!((g - first) % step, 0);
            assert_eq!(w + processes * r, g % count);
        }
    }

    #[test]
    fn reports_are_due_at_t0_plus_g_over_rate() {
        let t0 = Instant::now();
        assert_eq!(due(t0, 0, 100), t0);
        assert_eq!(due(t0, 250, 100), t0 + Duration::from_millis(2500));
        assert_eq!(due(t0, 1, 3), t0 + Duration::from_nanos(333_333_333));
        // The largest run (200000/s for 3600 s) does not overflow.
        assert_eq!(
            due(t0, 720_000_000, 200_000),
            t0 + Duration::from_secs(3600)
        );
    }

    /// A device publishing to a scripted server on loopback, which sends CONNACK and then
    /// PUBACKs only when told.
    struct Rig {
        ctx: Arc<Ctx>,
        events: mpsc::Receiver<DevEvent>,
        plan: watch::Sender<Option<Arc<Plan>>>,
        stop: watch::Sender<bool>,
        server: TcpStream,
        framer: Framer,
        buf: Vec<u8>,
    }

    async fn rig(planned: u64, max_inflight: u64) -> Rig {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let text = format!(
            "target = \"{}\"\ncount = 1\nrate = 1000\nauth = \"anonymous\"\nsources = 1\n",
            listener.local_addr().unwrap()
        );
        let s = crate::scenario::TelemetryScenario::parse(&text).unwrap();
        let (tx, events) = mpsc::channel(16);
        let ctx = Arc::new(Ctx {
            ids: Identities {
                product: "lt".into(),
                seed: 1,
                sign_type: 0,
                auth: crate::scenario::Auth::Anonymous,
            },
            fleet: s.fleet,
            role: Role::Publish {
                rate: 1000,
                qos: 1,
                planned,
                payload_bytes: 0,
                max_inflight,
            },
            index: 0,
            processes: 1,
            shared: Shared::new(10),
            events: tx,
        });
        let (plan, plan_rx) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(run(
            Arc::clone(&ctx),
            0,
            0,
            Instant::now(),
            plan_rx,
            stop_rx,
        ));
        let (mut server, _) = listener.accept().await.unwrap();
        let mut framer = Framer::default();
        let mut buf = vec![0u8; 4096];
        // CONNECT, then CONNACK 0.
        loop {
            if let Some(p) = framer.next_packet().unwrap() {
                assert_eq!(p, Packet::Other(1));
                break;
            }
            let n = server.read(&mut buf).await.unwrap();
            framer.feed(&buf[..n]);
        }
        server.write_all(&[0x20, 0x02, 0, 0]).await.unwrap();
        Rig {
            ctx,
            events,
            plan,
            stop,
            server,
            framer,
            buf,
        }
    }

    impl Rig {
        async fn event(&mut self) -> DevEvent {
            tokio::time::timeout(Duration::from_secs(5), self.events.recv())
                .await
                .unwrap()
                .unwrap()
        }

        fn start(&self, stop_after: Duration, drain: Duration) {
            let t0 = Instant::now();
            let _ = self.plan.send(Some(Arc::new(Plan {
                t0,
                stop_at: t0 + stop_after,
                drain_until: t0 + stop_after + drain,
                ranks: vec![0],
                publishing: 1,
            })));
        }

        /// The report numbers of the PUBLISHes received within `wait`, with their packet ids.
        async fn publishes(&mut self, wait: Duration) -> Vec<(u64, u16)> {
            let until = Instant::now() + wait;
            let mut got = Vec::new();
            loop {
                while let Some(p) = self.framer.next_packet().unwrap() {
                    if let Packet::Publish {
                        packet_id, payload, ..
                    } = p
                    {
                        let (seq, _) = crate::telemetry::parse_stamp(&payload).unwrap();
                        got.push((seq, packet_id));
                    }
                }
                match tokio::time::timeout_at(until, self.server.read(&mut self.buf)).await {
                    Ok(Ok(n)) if n > 0 => self.framer.feed(&self.buf[..n]),
                    _ => return got,
                }
            }
        }

        async fn ack(&mut self, ids: &[(u64, u16)]) {
            for &(_, id) in ids {
                self.server.write_all(&conn::puback(id)).await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_full_window_delays_reports_without_skipping_any() {
        let mut r = rig(6, 2).await;
        assert!(matches!(r.event().await, DevEvent::Connected(0)));
        // Six reports due over 5 ms; the window lets two out until PUBACKs come.
        r.start(Duration::from_secs(5), Duration::from_secs(5));
        let first = r.publishes(Duration::from_millis(300)).await;
        assert_eq!(first.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1]);
        r.ack(&first[..1]).await;
        let second = r.publishes(Duration::from_millis(300)).await;
        assert_eq!(second.iter().map(|p| p.0).collect::<Vec<_>>(), [2]);
        r.ack(&first[1..]).await;
        r.ack(&second).await;
        let mut rest = Vec::new();
        while rest.len() < 3 {
            let got = r.publishes(Duration::from_millis(300)).await;
            assert!(!got.is_empty(), "stalled after {rest:?}");
            r.ack(&got).await;
            rest.extend(got);
        }
        assert_eq!(rest.iter().map(|p| p.0).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(matches!(r.event().await, DevEvent::PublishDone(0)));
        let sh = &r.ctx.shared;
        assert_eq!(sh.sent.load(Ordering::Relaxed), 6);
        assert_eq!(sh.acked.load(Ordering::Relaxed), 6);
        // At least reports 2 and 3 waited for a PUBACK past their due time.
        assert!(sh.window_delayed.load(Ordering::Relaxed) >= 2, "{sh:?}");
        let _ = r.stop.send(true);
        assert!(matches!(r.event().await, DevEvent::Closed));
    }

    #[tokio::test]
    async fn without_pubacks_a_device_gives_up_at_stop_at_and_drain_until() {
        let mut r = rig(1000, 3).await;
        assert!(matches!(r.event().await, DevEvent::Connected(0)));
        let started = Instant::now();
        r.start(Duration::from_millis(300), Duration::from_millis(300));
        let got = r.publishes(Duration::from_millis(400)).await;
        assert_eq!(got.len(), 3, "{got:?}");
        // Done (three sent, the rest unsent) once the drain time is over.
        assert!(matches!(r.event().await, DevEvent::PublishDone(0)));
        assert!(started.elapsed() >= Duration::from_millis(600));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(r.ctx.shared.sent.load(Ordering::Relaxed), 3);
        assert_eq!(r.ctx.shared.acked.load(Ordering::Relaxed), 0);
        let _ = r.stop.send(true);
        assert!(matches!(r.event().await, DevEvent::Closed));
    }
}
