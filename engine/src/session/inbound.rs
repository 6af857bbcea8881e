//! What a connected device sends: publications (topic aliases, QoS 1 and 2, the ACL, flow
//! control), PUBREL, SUBSCRIBE and UNSUBSCRIBE.

use fleetgate_codec::mqtt::bytestring::ByteString;
use fleetgate_codec::mqtt::{self, QoS, v5};

use std::sync::Arc;

use super::{Action, DeviceInfo, Env, SessionState};
use crate::acl::{SubscribeScope, may_publish, may_subscribe};
use crate::flow::Take;
use crate::metrics::{AclAction, CloseReason, Throttle};
use crate::ops::{OpsError, SubscribeOutcome};
use crate::time::Millis;
use crate::upstream::Published;

/// Why a publication is refused, and how that is said on each version.
enum Refusal {
    NotAuthorized,
    Quota,
}

impl SessionState {
    /// Resolves the topic of a publication through the client's topic aliases (MQTT 5
    /// §3.3.2.3.4). `None` means the session was closed.
    fn resolve_topic(&mut self, p: &mqtt::Publish, env: &mut Env<'_>) -> Option<ByteString> {
        use v5::DisconnectReasonCode as D;
        let alias = p.properties.as_ref().and_then(|pr| pr.topic_alias);
        let Some(alias) = alias.filter(|_| self.version.is_v5()) else {
            if p.topic.is_empty() {
                self.close(CloseReason::ProtocolError, Some(D::ProtocolError), env);
                return None;
            }
            return Some(p.topic.clone());
        };
        let index = usize::from(alias.get()) - 1;
        if alias.get() > env.config.topic_alias_maximum {
            self.close(CloseReason::ProtocolError, Some(D::TopicAliasInvalid), env);
            return None;
        }
        let aliases = &mut self.live_mut().aliases;
        if aliases.len() <= index {
            aliases.resize(index + 1, None);
        }
        if p.topic.is_empty() {
            match aliases.get(index).cloned().flatten() {
                Some(t) => Some(t),
                None => {
                    self.close(CloseReason::ProtocolError, Some(D::ProtocolError), env);
                    None
                }
            }
        } else {
            aliases[index] = Some(p.topic.clone());
            Some(p.topic.clone())
        }
    }

    pub(super) fn on_publish(&mut self, p: mqtt::Publish, env: &mut Env<'_>) {
        use v5::DisconnectReasonCode as D;
        let Some(device) = self.device.clone() else {
            return;
        };
        let Some(topic) = self.resolve_topic(&p, env) else {
            return;
        };
        if topic.contains(['+', '#']) {
            // [MQTT-3.3.2-2]
            return self.close(CloseReason::ProtocolError, Some(D::TopicNameInvalid), env);
        }
        if p.retain && self.version.is_v5() {
            // Retained messages are not offered (CONNACK said so): [MQTT-3.2.2-14].
            return self.close(CloseReason::ProtocolError, Some(D::RetainNotSupported), env);
        }
        let id = p.packet_id;
        if p.qos != QoS::AtMostOnce && id.is_none() {
            return self.close(CloseReason::ProtocolError, Some(D::ProtocolError), env);
        }
        if let (QoS::ExactlyOnce, Some(id)) = (p.qos, id) {
            let pending = self.persistent.as_ref().map_or(0, |s| s.inbound_qos2.len());
            if self
                .persistent
                .as_ref()
                .is_some_and(|s| s.inbound_qos2.contains(&id))
            {
                // A resend of a publication already received: acknowledge, do not deliver twice.
                return self.ack(QoS::ExactlyOnce, id, v5::PublishAckReason::Success, env);
            }
            if pending >= usize::from(env.config.receive_maximum) {
                return self.close(
                    CloseReason::ProtocolError,
                    Some(D::ReceiveMaximumExceeded),
                    env,
                );
            }
        }
        if !may_publish(&device, device.device_id.as_str(), &topic, env.acl) {
            env.metrics.acl_denied(AclAction::Publish);
            return self.refuse_publish(p.qos, id, Refusal::NotAuthorized, env);
        }
        // Over budget, a device is first slowed down (its socket is not read until the debt is
        // paid); still over budget after `max_throttle_ms`, or deeper in debt than its burst,
        // it is refused.
        let (m, b) = (device.product.messages, device.product.bytes);
        let limit = device.product.max_throttle_ms;
        let by_count = self.messages.take(1, m, env.now);
        if by_count == Take::Refused
            || (by_count != Take::Ok && self.throttled_for(env.now) >= limit)
        {
            env.metrics.throttled(Throttle::RefusedRate);
            return self.close(CloseReason::Throttled, Some(D::MessageRateTooHigh), env);
        }
        let by_size = self.bytes.take(p.payload.len() as u64, b, env.now);
        if by_size == Take::Refused || (by_size != Take::Ok && self.throttled_for(env.now) >= limit)
        {
            env.metrics.throttled(Throttle::RefusedQuota);
            return self.refuse_publish(p.qos, id, Refusal::Quota, env);
        }
        let pause = [by_count, by_size]
            .into_iter()
            .filter_map(|t| match t {
                Take::PauseUntil(at) => Some(at),
                _ => None,
            })
            .max();
        if let Some(until) = pause {
            env.metrics.throttled(Throttle::Paused);
            let live = self.live_mut();
            live.throttled_since.get_or_insert(env.now);
            env.actions.push(Action::PauseReads(until));
        } else if let Some(live) = self.live.as_mut() {
            live.throttled_since = None;
        }
        if let Some(id) = id {
            if p.qos == QoS::ExactlyOnce {
                self.persistent_mut().inbound_qos2.push(id);
            }
            self.ack(p.qos, id, v5::PublishAckReason::Success, env);
        }
        env.actions.push(Action::Upstream(Published {
            device_id: device.device_id.clone(),
            app_id: device.product.app_id.clone(),
            topic,
            payload: p.payload,
            qos: p.qos.value(),
            will: false,
            at: env.wall,
        }));
    }

    fn ack(
        &mut self,
        qos: QoS,
        id: std::num::NonZeroU16,
        reason: v5::PublishAckReason,
        env: &mut Env<'_>,
    ) {
        let ack = v5::PublishAck {
            packet_id: id,
            reason_code: reason,
            ..Default::default()
        };
        let packet = if qos == QoS::ExactlyOnce {
            v5::Packet::PublishReceived(ack)
        } else {
            v5::Packet::PublishAck(ack)
        };
        self.send(packet, env);
    }

    /// How long the device has been over its budget without a break, in milliseconds.
    fn throttled_for(&self, now: Millis) -> u64 {
        self.live
            .as_ref()
            .and_then(|l| l.throttled_since)
            .map_or(0, |since| now.since(since))
    }

    fn refuse_publish(
        &mut self,
        qos: QoS,
        id: Option<std::num::NonZeroU16>,
        why: Refusal,
        env: &mut Env<'_>,
    ) {
        let v5 = self.version.is_v5();
        match why {
            // MQTT 5 acknowledges QoS 1/2 with 0x97; QoS 0, and 3.1.1 at any QoS, cannot be
            // told why, so the connection ends (with DISCONNECT 0x97 on MQTT 5).
            Refusal::Quota => match id {
                Some(id) if v5 => self.ack(qos, id, v5::PublishAckReason::QuotaExceeded, env),
                _ => self.close(
                    CloseReason::Throttled,
                    Some(v5::DisconnectReasonCode::QuotaExceeded),
                    env,
                ),
            },
            Refusal::NotAuthorized => match (qos, id) {
                // A refused QoS 0 publication is dropped silently.
                (QoS::AtMostOnce, _) | (_, None) => {}
                // MQTT 5 says why; a refused QoS 2 then gets no PUBREL ([MQTT-4.3.3-4]).
                (_, Some(id)) if v5 => self.ack(qos, id, v5::PublishAckReason::NotAuthorized, env),
                // 3.1.1 has no way to refuse: acknowledge and drop.
                (QoS::AtLeastOnce, Some(id)) => {
                    self.ack(qos, id, v5::PublishAckReason::Success, env)
                }
                (QoS::ExactlyOnce, Some(id)) => {
                    self.persistent_mut().inbound_qos2.push(id);
                    self.ack(qos, id, v5::PublishAckReason::Success, env);
                }
            },
        }
    }

    pub(super) fn on_pubrel(&mut self, rel: v5::PublishAck2, env: &mut Env<'_>) {
        let id = rel.packet_id;
        let known = match self.persistent.as_mut() {
            Some(p) => {
                let before = p.inbound_qos2.len();
                p.inbound_qos2.retain(|x| *x != id);
                before != p.inbound_qos2.len()
            }
            None => false,
        };
        let reason = if known {
            v5::PublishAck2Reason::Success
        } else {
            v5::PublishAck2Reason::PacketIdNotFound
        };
        let comp = v5::PublishAck2 {
            packet_id: id,
            reason_code: reason,
            ..Default::default()
        };
        self.send(v5::Packet::PublishComplete(comp), env);
    }

    pub(super) fn on_subscribe(&mut self, s: v5::Subscribe, env: &mut Env<'_>) {
        use v5::SubscribeAckReason as R;
        let Some(device) = self.device.clone() else {
            return;
        };
        if s.id.is_some() {
            // CONNACK said subscription identifiers are not available.
            return self.close(
                CloseReason::ProtocolError,
                Some(v5::DisconnectReasonCode::SubscriptionIdentifiersNotSupported),
                env,
            );
        }
        let own = device.device_id.to_string();
        let mut status = Vec::with_capacity(s.topic_filters.len());
        for (filter, opts) in s.topic_filters {
            let reason = match self.grant(&device, &own, filter, opts.qos, env) {
                Ok(QoS::AtMostOnce) => R::GrantedQos0,
                Ok(QoS::AtLeastOnce) => R::GrantedQos1,
                Ok(QoS::ExactlyOnce) => R::GrantedQos2,
                Err(Refused::Shared) => R::SharedSubscriptionNotSupported,
                Err(Refused::Invalid) => R::TopicFilterInvalid,
                Err(Refused::NotAuthorized) => R::NotAuthorized,
            };
            status.push(reason);
        }
        let ack = v5::SubscribeAck {
            packet_id: s.packet_id,
            properties: Vec::new(),
            reason_string: None,
            status,
        };
        self.send(v5::Packet::SubscribeAck(ack), env);
    }

    pub(super) fn on_unsubscribe(&mut self, u: v5::Unsubscribe, env: &mut Env<'_>) {
        let own = self
            .device
            .as_ref()
            .map(|d| d.device_id.to_string())
            .unwrap_or_default();
        let mut status = Vec::with_capacity(u.topic_filters.len());
        for f in &u.topic_filters {
            status.push(if self.ungrant(&own, f, env) {
                v5::UnsubscribeAckReason::Success
            } else {
                v5::UnsubscribeAckReason::NoSubscriptionExisted
            });
        }
        let ack = v5::UnsubscribeAck {
            packet_id: u.packet_id,
            properties: Vec::new(),
            reason_string: None,
            status,
        };
        self.send(v5::Packet::UnsubscribeAck(ack), env);
    }

    /// Checks `filter` against the ACL and, when allowed, adds it to the subscriptions (with a
    /// route when it lies outside the device's tree); returns the QoS granted.
    fn grant(
        &mut self,
        device: &crate::acl::DeviceInfo,
        own: &str,
        filter: ByteString,
        asked: QoS,
        env: &mut Env<'_>,
    ) -> Result<QoS, Refused> {
        if filter.starts_with("$share/") {
            return Err(Refused::Shared);
        }
        if fleetgate_model::topic::validate_filter(&filter).is_err() {
            return Err(Refused::Invalid);
        }
        let Some(scope) = may_subscribe(device, own, &filter, env.acl) else {
            env.metrics.acl_denied(AclAction::Subscribe);
            return Err(Refused::NotAuthorized);
        };
        // System topics are delivered at QoS 0 or 1 (spec §3.2); other topics up to QoS 2.
        let system =
            scope == SubscribeScope::Own && crate::acl::families_covered(&filter, own) != 0;
        let cap = if system {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let qos = asked.less_value(cap);
        if scope == SubscribeScope::Granted {
            env.actions.push(Action::Route {
                filter: filter.clone(),
                qos: Some(qos),
            });
        }
        self.persistent_mut().subscriptions.insert(filter, qos, own);
        Ok(qos)
    }

    /// Removes a subscription (and its route); returns whether it existed.
    fn ungrant(&mut self, own: &str, filter: &ByteString, env: &mut Env<'_>) -> bool {
        let own_tree = format!("{}{own}/", fleetgate_model::topic::OC_PREFIX);
        let removed = self
            .persistent
            .as_mut()
            .is_some_and(|p| p.subscriptions.remove(filter, own));
        if removed && !filter.starts_with(&own_tree) {
            env.actions.push(Action::Route {
                filter: filter.clone(),
                qos: None,
            });
        }
        removed
    }

    /// The device of an established session; a session still connecting, or gone, is offline
    /// for the application API.
    fn connected_device(&self) -> Result<Arc<DeviceInfo>, OpsError> {
        match &self.device {
            Some(d) if self.phase == super::Phase::Connected => Ok(Arc::clone(d)),
            _ => Err(OpsError::Offline),
        }
    }

    /// Subscribes the established session to `filter` on the device's behalf (the
    /// application API's proxy subscription, spec/app-side.md §10 row 8): the same checks as a
    /// SUBSCRIBE from the device, without a SUBACK.
    pub fn proxy_subscribe(
        &mut self,
        filter: ByteString,
        qos: QoS,
        env: &mut Env<'_>,
    ) -> Result<SubscribeOutcome, OpsError> {
        let device = self.connected_device()?;
        let own = device.device_id.to_string();
        let replaced = self
            .persistent
            .as_ref()
            .is_some_and(|p| p.subscriptions.contains(&filter));
        match self.grant(&device, &own, filter, qos, env) {
            Ok(granted) => Ok(SubscribeOutcome { granted, replaced }),
            Err(Refused::NotAuthorized) => Err(OpsError::NotAuthorized),
            Err(Refused::Shared | Refused::Invalid) => Err(OpsError::InvalidFilter),
        }
    }

    /// Removes a subscription of the established session on the device's behalf; returns
    /// whether it existed.
    pub fn proxy_unsubscribe(
        &mut self,
        filter: &ByteString,
        env: &mut Env<'_>,
    ) -> Result<bool, OpsError> {
        let device = self.connected_device()?;
        Ok(self.ungrant(device.device_id.as_str(), filter, env))
    }
}

/// Why a subscription is refused.
enum Refused {
    Shared,
    Invalid,
    NotAuthorized,
}
