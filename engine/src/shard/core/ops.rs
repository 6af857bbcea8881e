//! The shard's side of [`crate::ops`]: answers listings, inspections, proxy subscriptions,
//! publications and counts from the application API. Every answer goes on a one-shot channel
//! with room for it, so the reactor never blocks; a caller that gave up meanwhile is ignored.

use fleetgate_codec::mqtt::QoS;

use super::{ConnId, Entry, Io, ShardCore, Slot};
use crate::metrics::Counter;
use crate::ops::{OpsError, OpsRequest, SessionInfo, ShardCounts};
use crate::registry::SessionRef;
use crate::session::{Downlink, Phase, Pushed};

impl ShardCore {
    pub(super) fn on_ops<I: Io>(&mut self, req: OpsRequest, io: &mut I) {
        match req {
            OpsRequest::List {
                filter,
                after,
                limit,
                reply,
            } => {
                let mut found: Vec<SessionInfo> = self
                    .sessions_here()
                    .filter(|s| after.as_ref().is_none_or(|a| s.device_id > *a))
                    .filter(|s| filter.matches(s))
                    .collect();
                found.sort_by(|a, b| a.device_id.cmp(&b.device_id));
                found.truncate(limit);
                let _ = reply.try_send(found);
            }
            OpsRequest::Inspect { target, reply } => {
                let info = self.info(ConnId::from(target));
                let _ = reply.try_send(info);
            }
            OpsRequest::Subscribe {
                target,
                filter,
                qos,
                reply,
            } => {
                let id = ConnId::from(target);
                let mut outcome = Err(OpsError::Offline);
                if self.info(id).is_some() {
                    self.run(id, io, |s, env| {
                        outcome = match qos {
                            Some(q) => s.proxy_subscribe(filter, q, env).map(Some),
                            None => s.proxy_unsubscribe(&filter, env).map(|removed| {
                                removed.then_some(crate::ops::SubscribeOutcome {
                                    granted: QoS::AtMostOnce,
                                    replaced: true,
                                })
                            }),
                        };
                    });
                    self.flush(id, io);
                }
                let _ = reply.try_send(outcome);
            }
            OpsRequest::Publish {
                target,
                app,
                msg,
                reply,
            } => {
                let taken = self.publish_to(target, &app, msg, io);
                let _ = reply.try_send(taken);
            }
            OpsRequest::Count { app, reply } => {
                let mut counts = ShardCounts::default();
                for s in self
                    .sessions_here()
                    .filter(|s| app.as_ref().is_none_or(|a| *a == s.app_id))
                {
                    counts.online += 1;
                    counts.subscriptions += s.subscriptions as u64;
                    *counts.per_product.entry(s.product_id).or_default() += 1;
                }
                let _ = reply.try_send(counts);
            }
        }
    }

    /// The established sessions of this shard.
    fn sessions_here(&self) -> impl Iterator<Item = SessionInfo> + '_ {
        (0..self.entries.len()).filter_map(|i| {
            let e = &self.entries[i];
            self.info(ConnId {
                slot: i as u32,
                generation: e.generation,
            })
        })
    }

    /// What a listing shows of connection `id`, when it is an established session.
    fn info(&self, id: ConnId) -> Option<SessionInfo> {
        let c = self.conn(id)?;
        if c.closed || c.session.phase() != Phase::Connected {
            return None;
        }
        let device = c.session.device()?;
        Some(SessionInfo {
            device_id: device.device_id.clone(),
            product_id: device.product.product_id.clone(),
            app_id: device.product.app_id.clone(),
            client_id: c.session.client_id().to_owned(),
            peer: c.peer,
            protocol: c.session.version().level(),
            keepalive_secs: c.session.keepalive_secs(),
            connected_at: c.connected_at,
            shard: self.id,
            subscriptions: c.session.subscription_count(),
        })
    }

    /// Hands `msg` to the session `target` when its device belongs to `app` and receives the
    /// topic; a detached persistent session queues QoS 1 and 2. Returns whether it was taken.
    fn publish_to<I: Io>(
        &mut self,
        target: SessionRef,
        app: &fleetgate_model::AppId,
        msg: Downlink,
        io: &mut I,
    ) -> bool {
        let id = ConnId::from(target);
        let max_queue = self.shared.config.session.max_queued_messages as usize;
        match self.entries.get_mut(id.slot as usize) {
            Some(Entry {
                generation,
                slot: Slot::Conn(c),
            }) if *generation == id.generation && !c.closed => {
                let ok = c.session.device().is_some_and(|d| d.product.app_id == *app)
                    && c.session.receives(&msg.topic);
                if ok {
                    self.run(id, io, |s, env| s.on_deliver(msg, env));
                    self.flush(id, io);
                }
                ok
            }
            Some(Entry {
                generation,
                slot: Slot::Detached(d),
            }) if *generation == id.generation && d.device.product.app_id == *app => {
                let granted = d.persistent.subscriptions.qos_for(&d.device, &msg.topic);
                let qos = granted.map(|g| msg.qos.less_value(g));
                if !matches!(qos, Some(QoS::AtLeastOnce | QoS::ExactlyOnce)) {
                    return false;
                }
                let qos = qos.unwrap_or(QoS::AtMostOnce);
                match d
                    .persistent
                    .outbox
                    .push_offline(Downlink { qos, ..msg }, max_queue)
                {
                    Pushed::Dropped => {
                        self.metrics.add(Counter::QueueDropped, 1);
                        false
                    }
                    Pushed::DroppedOldest => {
                        self.metrics.add(Counter::QueueDropped, 1);
                        true
                    }
                    _ => true,
                }
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Conn;
    use fleetgate_model::Timestamp;

    /// The per-session cost of the listings: the connect time in each connection, nothing
    /// else (the rest is what the session holds anyway).
    #[test]
    fn sessions_pay_eight_bytes_for_listings() {
        assert_eq!(std::mem::size_of::<Timestamp>(), 8);
        let conn = std::mem::size_of::<Conn>();
        println!("a connection is {conn} bytes, 8 of them the connect time");
        assert!(conn < 1024, "a connection grew to {conn} bytes");
    }
}
