//! Conversions between rmqtt-codec's MQTT 3.x packets and the MQTT 5.0 packets the session layer
//! speaks.
//!
//! Going up ([`v3_to_v5`]) every 3.x packet has an exact 5.0 counterpart with default properties
//! and "success" reason codes. Going down ([`v5_to_v3`]) 5.0-only information is dropped the way
//! MQTT 3.1.1 prescribes (reason codes become return codes or disappear, properties vanish) and
//! what 3.x cannot express at all is an error.

use rmqtt_codec::types::{Protocol, Publish, QoS};
use rmqtt_codec::v3;
use rmqtt_codec::v5::{
    self, ConnectAckReason, DisconnectReasonCode, PublishAck, PublishAck2, PublishProperties,
    SubscribeAckReason, SubscriptionOptions,
};

use super::Version;
use super::error::{Error, Result};
use super::frame::packet_type as pt;

/// Converts a decoded MQTT 3.1 or 3.1.1 packet into its MQTT 5.0 counterpart.
pub(crate) fn v3_to_v5(packet: v3::Packet) -> Result<v5::Packet> {
    Ok(match packet {
        v3::Packet::Connect(connect) => v5::Packet::Connect(Box::new(connect_up(*connect))),
        v3::Packet::ConnectAck(ack) => v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
            session_present: ack.session_present,
            reason_code: connack_up(u8::from(ack.return_code))?,
            ..v5::ConnectAck::default()
        })),
        v3::Packet::Publish(publish) => v5::Packet::Publish(Box::new(Publish {
            properties: Some(PublishProperties::default()),
            ..*publish
        })),
        v3::Packet::PublishAck { packet_id } => v5::Packet::PublishAck(ack(packet_id)),
        v3::Packet::PublishReceived { packet_id } => v5::Packet::PublishReceived(ack(packet_id)),
        v3::Packet::PublishRelease { packet_id } => v5::Packet::PublishRelease(ack2(packet_id)),
        v3::Packet::PublishComplete { packet_id } => v5::Packet::PublishComplete(ack2(packet_id)),
        v3::Packet::Subscribe {
            packet_id,
            topic_filters,
        } => v5::Packet::Subscribe(v5::Subscribe {
            packet_id,
            id: None,
            user_properties: Vec::new(),
            topic_filters: topic_filters
                .into_iter()
                .map(|(filter, qos)| {
                    let options = SubscriptionOptions {
                        qos,
                        ..SubscriptionOptions::default()
                    };
                    (filter, options)
                })
                .collect(),
        }),
        v3::Packet::SubscribeAck { packet_id, status } => {
            v5::Packet::SubscribeAck(v5::SubscribeAck {
                packet_id,
                properties: Vec::new(),
                reason_string: None,
                status: status.into_iter().map(suback_up).collect(),
            })
        }
        v3::Packet::Unsubscribe {
            packet_id,
            topic_filters,
        } => v5::Packet::Unsubscribe(v5::Unsubscribe {
            packet_id,
            user_properties: Vec::new(),
            topic_filters,
        }),
        v3::Packet::UnsubscribeAck { packet_id } => {
            v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
                packet_id,
                properties: Vec::new(),
                reason_string: None,
                status: Vec::new(),
            })
        }
        v3::Packet::PingRequest => v5::Packet::PingRequest,
        v3::Packet::PingResponse => v5::Packet::PingResponse,
        v3::Packet::Disconnect => v5::Packet::Disconnect(v5::Disconnect::new(
            DisconnectReasonCode::NormalDisconnection,
        )),
    })
}

/// A 3.x CONNECT as a 5.0 one.
///
/// A 3.1.1 session with CleanSession 0 outlives the connection with no time limit and one with
/// CleanSession 1 ends with it (MQTT 3.1.1 §3.1.2.4): in 5.0 terms a Session Expiry Interval of
/// 0xFFFFFFFF, "never expires", or 0 (MQTT 5.0 §3.1.2.11.2). The Will gets default Will
/// properties (MQTT 5.0 §3.1.3.2).
fn connect_up(connect: v3::Connect) -> v5::Connect {
    let v3::Connect {
        protocol: _,
        clean_session,
        keep_alive,
        last_will,
        client_id,
        username,
        password,
        cert,
    } = connect;
    v5::Connect {
        clean_start: clean_session,
        keep_alive,
        session_expiry_interval_secs: if clean_session { 0 } else { u32::MAX },
        last_will: last_will.map(|will| v5::LastWill {
            qos: will.qos,
            retain: will.retain,
            topic: will.topic,
            message: will.message,
            will_delay_interval_sec: None,
            correlation_data: None,
            message_expiry_interval: None,
            content_type: None,
            user_properties: Vec::new(),
            is_utf8_payload: None,
            response_topic: None,
        }),
        client_id,
        username,
        password,
        cert,
        ..v5::Connect::default()
    }
}

/// A 3.1.1 CONNACK return code (MQTT 3.1.1 §3.2.2.3) as the 5.0 reason code of the same meaning.
fn connack_up(code: u8) -> Result<ConnectAckReason> {
    Ok(match code {
        0x00 => ConnectAckReason::Success,
        0x01 => ConnectAckReason::UnsupportedProtocolVersion,
        0x02 => ConnectAckReason::ClientIdentifierNotValid,
        0x03 => ConnectAckReason::ServerUnavailable,
        0x04 => ConnectAckReason::BadUserNameOrPassword,
        0x05 => ConnectAckReason::NotAuthorized,
        code => return Err(Error::ReservedConnackCode { code }),
    })
}

/// The MQTT 3.1.1 CONNACK return code for an MQTT 5.0 CONNACK reason code.
///
/// See [`connack_v3_code`](super::connack_v3_code) for the table.
pub(crate) const fn connack_down(reason: ConnectAckReason) -> u8 {
    match reason {
        ConnectAckReason::Success => 0x00,
        ConnectAckReason::UnsupportedProtocolVersion => 0x01,
        ConnectAckReason::ClientIdentifierNotValid => 0x02,
        ConnectAckReason::BadUserNameOrPassword => 0x04,
        ConnectAckReason::NotAuthorized | ConnectAckReason::Banned => 0x05,
        ConnectAckReason::UnspecifiedError
        | ConnectAckReason::MalformedPacket
        | ConnectAckReason::ProtocolError
        | ConnectAckReason::ImplementationSpecificError
        | ConnectAckReason::ServerUnavailable
        | ConnectAckReason::ServerBusy
        | ConnectAckReason::BadAuthenticationMethod
        | ConnectAckReason::TopicNameInvalid
        | ConnectAckReason::PacketTooLarge
        | ConnectAckReason::QuotaExceeded
        | ConnectAckReason::PayloadFormatInvalid
        | ConnectAckReason::RetainNotSupported
        | ConnectAckReason::QosNotSupported
        | ConnectAckReason::UseAnotherServer
        | ConnectAckReason::ServerMoved
        | ConnectAckReason::ConnectionRateExceeded => 0x03,
    }
}

fn ack(packet_id: std::num::NonZeroU16) -> PublishAck {
    PublishAck {
        packet_id,
        ..PublishAck::default()
    }
}

fn ack2(packet_id: std::num::NonZeroU16) -> PublishAck2 {
    PublishAck2 {
        packet_id,
        ..PublishAck2::default()
    }
}

/// A 3.1.1 SUBACK return code as a 5.0 reason code: 0x80 "Failure" is 5.0's 0x80 "Unspecified
/// error" (MQTT 3.1.1 §3.9.3, MQTT 5.0 §3.9.3).
const fn suback_up(code: v3::SubscribeReturnCode) -> SubscribeAckReason {
    match code {
        v3::SubscribeReturnCode::Success(QoS::AtMostOnce) => SubscribeAckReason::GrantedQos0,
        v3::SubscribeReturnCode::Success(QoS::AtLeastOnce) => SubscribeAckReason::GrantedQos1,
        v3::SubscribeReturnCode::Success(QoS::ExactlyOnce) => SubscribeAckReason::GrantedQos2,
        v3::SubscribeReturnCode::Failure => SubscribeAckReason::UnspecifiedError,
    }
}

/// A 5.0 SUBACK reason code as a 3.1.1 return code: a grant keeps its QoS, every refusal becomes
/// 0x80 "Failure" (MQTT 3.1.1 §3.9.3).
const fn suback_down(reason: SubscribeAckReason) -> v3::SubscribeReturnCode {
    match reason {
        SubscribeAckReason::GrantedQos0 => v3::SubscribeReturnCode::Success(QoS::AtMostOnce),
        SubscribeAckReason::GrantedQos1 => v3::SubscribeReturnCode::Success(QoS::AtLeastOnce),
        SubscribeAckReason::GrantedQos2 => v3::SubscribeReturnCode::Success(QoS::ExactlyOnce),
        _ => v3::SubscribeReturnCode::Failure,
    }
}

/// Converts an MQTT 5.0 packet into the MQTT 3.1 or 3.1.1 packet to send in its place.
///
/// Acknowledgements keep only their Packet Identifier: MQTT 3.1.1 has no way to refuse a PUBLISH
/// and tells a server to acknowledge it positively or close the connection ([MQTT-3.3.5-2]), so a
/// refusing 5.0 PUBACK becomes a plain PUBACK. A refusing CONNACK has Session Present 0
/// ([MQTT-3.2.2-4]). AUTH has no 3.x form.
pub(crate) fn v5_to_v3(packet: &v5::Packet, version: Version) -> Result<v3::Packet> {
    Ok(match packet {
        v5::Packet::Connect(connect) => {
            v3::Packet::Connect(Box::new(connect_down(connect, version)?))
        }
        v5::Packet::ConnectAck(ack) => {
            let code = connack_down(ack.reason_code);
            let return_code = v3::ConnectAckReason::try_from(code)
                .map_err(|source| Error::decode(pt::CONNACK, source))?;
            v3::Packet::ConnectAck(v3::ConnectAck {
                return_code,
                session_present: ack.session_present && code == 0,
            })
        }
        v5::Packet::Publish(publish) => {
            if publish.topic.is_empty() {
                return Err(Error::EmptyTopicName);
            }
            v3::Packet::Publish(Box::new(Publish {
                properties: None,
                ..(**publish).clone()
            }))
        }
        v5::Packet::PublishAck(ack) => v3::Packet::PublishAck {
            packet_id: ack.packet_id,
        },
        v5::Packet::PublishReceived(ack) => v3::Packet::PublishReceived {
            packet_id: ack.packet_id,
        },
        v5::Packet::PublishRelease(ack) => v3::Packet::PublishRelease {
            packet_id: ack.packet_id,
        },
        v5::Packet::PublishComplete(ack) => v3::Packet::PublishComplete {
            packet_id: ack.packet_id,
        },
        v5::Packet::Subscribe(subscribe) => v3::Packet::Subscribe {
            packet_id: subscribe.packet_id,
            topic_filters: subscribe
                .topic_filters
                .iter()
                .map(|(filter, options)| (filter.clone(), options.qos))
                .collect(),
        },
        v5::Packet::SubscribeAck(ack) => v3::Packet::SubscribeAck {
            packet_id: ack.packet_id,
            status: ack.status.iter().copied().map(suback_down).collect(),
        },
        v5::Packet::Unsubscribe(unsubscribe) => v3::Packet::Unsubscribe {
            packet_id: unsubscribe.packet_id,
            topic_filters: unsubscribe.topic_filters.clone(),
        },
        v5::Packet::UnsubscribeAck(ack) => v3::Packet::UnsubscribeAck {
            packet_id: ack.packet_id,
        },
        v5::Packet::PingRequest => v3::Packet::PingRequest,
        v5::Packet::PingResponse => v3::Packet::PingResponse,
        v5::Packet::Disconnect(_) => v3::Packet::Disconnect,
        v5::Packet::Auth(_) => {
            return Err(Error::NotInV3 {
                packet_type: pt::AUTH,
            });
        }
    })
}

/// A 5.0 CONNECT as a 3.x one, for client simulators: Clean Start becomes CleanSession and the
/// 5.0 properties are dropped.
fn connect_down(connect: &v5::Connect, version: Version) -> Result<v3::Connect> {
    if connect.password.is_some() && connect.username.is_none() {
        return Err(Error::PasswordWithoutUsername);
    }
    Ok(v3::Connect {
        protocol: Protocol(version.level()),
        clean_session: connect.clean_start,
        keep_alive: connect.keep_alive,
        last_will: connect.last_will.as_ref().map(|will| v3::LastWill {
            qos: will.qos,
            retain: will.retain,
            topic: will.topic.clone(),
            message: will.message.clone(),
        }),
        client_id: connect.client_id.clone(),
        username: connect.username.clone(),
        password: connect.password.clone(),
        cert: None,
    })
}
