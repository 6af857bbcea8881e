//! MQTT framing glue: finds packet boundaries in a byte stream and turns MQTT 3.1, 3.1.1 and 5.0
//! packets into one vocabulary, rmqtt-codec's MQTT 5.0 packet types, and back.
//!
//! The engine's MQTT connection code calls this module; the session layer above it only ever sees
//! [`v5::Packet`]. Per connection the flow is:
//!
//! 1. [`frame_len`] on the read buffer until a whole frame has arrived (and to refuse one larger
//!    than the server's Maximum Packet Size before buffering it);
//! 2. for the first frame, [`connect_version`] to learn the protocol version, or to tell an
//!    unsupported version (answer CONNACK 0x01 / 0x84) from garbage (just close);
//! 3. [`decode`] of every frame with that [`Version`] into a [`v5::Packet`], and on failure
//!    [`Error::disconnect_reason`] for the MQTT 5.0 DISCONNECT sent before closing;
//! 4. [`encode`] of every outgoing [`v5::Packet`] into the connection's version.
//!
//! MQTT 3.x packets are converted, not re-implemented: a 3.1.1 CONNECT becomes a 5.0 CONNECT whose
//! Session Expiry Interval expresses CleanSession, acknowledgements carry the "success" reason
//! code, and on the way out 5.0 reason codes are mapped onto 3.1.1 return codes
//! ([`connack_v3_code`]) or dropped where 3.1.1 has none. The session logic therefore exists once,
//! for MQTT 5.0.
//!
//! [`v5`], [`QoS`], [`Publish`] (which rmqtt-codec keeps outside its `v5` module), [`bytes`] and
//! [`bytestring`] are re-exported so that the session layer uses the very versions this module
//! decodes into.
//!
//! The wire format itself is rmqtt-codec's; this module adds what it lacks for a server that
//! faces untrusted devices: checks it does not make (reserved flags, packet identifier 0, bytes
//! after a CONNECT, 3.1.1 SUBSCRIBE reserved bits), distinct errors with the reason codes of
//! MQTT 5.0 §4.13, the MQTT 5.0 short forms of acknowledgements and DISCONNECT, and guards around
//! its panics and bugs (see [`encode`]). Nothing here does I/O or keeps connection state:
//! negotiated limits such as Topic Alias Maximum or Receive Maximum, and the rule that the first
//! packet is a CONNECT, are the session layer's.
//!
//! ```
//! use fleetgate_codec::mqtt::{self, v5, Version, bytes::BytesMut};
//!
//! // An MQTT 3.1.1 CONNECT (OASIS MQTT 3.1.1 §3.1): client "d1", CleanSession 1, keep alive 60.
//! let connect = [0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C,
//!                0x00, 0x02, b'd', b'1'];
//! let len = mqtt::frame_len(&connect, 1024)?.expect("complete frame");
//! let version = mqtt::connect_version(&connect[..len])?;
//! assert_eq!(version, Version::V311);
//!
//! let v5::Packet::Connect(packet) = mqtt::decode(&connect[..len], version, 1024)? else {
//!     panic!("not a CONNECT");
//! };
//! assert!(packet.clean_start);
//! assert_eq!(packet.session_expiry_interval_secs, 0);
//!
//! // The session layer answers in MQTT 5.0 terms; the device receives a 3.1.1 CONNACK.
//! let mut out = BytesMut::new();
//! mqtt::encode(&v5::ConnectAck::default().into(), version, &mut out)?;
//! assert_eq!(&out[..], [0x20, 0x02, 0x00, 0x00]);
//! # Ok::<(), mqtt::Error>(())
//! ```

mod check;
mod convert;
mod error;
mod frame;

use std::fmt;

use bytes::BytesMut;
use rmqtt_codec::error::DecodeError;
use rmqtt_codec::v3;
use tokio_util::codec::{Decoder, Encoder};

pub use bytes;
pub use bytestring;
pub use error::{Error, Result};
pub use frame::frame_len;
pub use rmqtt_codec::types::{Publish, QoS};
pub use rmqtt_codec::v5;

use frame::{FixedHeader, MAX_REMAINING_LENGTH, check_size, packet_type as pt};

/// An MQTT protocol version, as announced by the protocol level of a CONNECT (MQTT 3.1.1
/// §3.1.2.2, MQTT 5.0 §3.1.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// MQTT 3.1 (IBM), protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1 (OASIS, 2014), protocol name "MQTT", level 4.
    V311,
    /// MQTT 5.0 (OASIS, 2019), protocol name "MQTT", level 5.
    V5,
}

impl Version {
    /// The protocol level byte of the CONNECT: 3, 4 or 5.
    #[must_use]
    pub const fn level(self) -> u8 {
        match self {
            Self::V31 => 3,
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    /// Whether this is MQTT 5.0, the version with reason codes and properties.
    #[must_use]
    pub const fn is_v5(self) -> bool {
        matches!(self, Self::V5)
    }

    /// The version of a protocol level, if it is one this module speaks.
    #[must_use]
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            3 => Some(Self::V31),
            4 => Some(Self::V311),
            5 => Some(Self::V5),
            _ => None,
        }
    }

    /// The protocol name a CONNECT of this version carries.
    #[must_use]
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::V31 => "MQIsdp",
            Self::V311 | Self::V5 => "MQTT",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V31 => "3.1",
            Self::V311 => "3.1.1",
            Self::V5 => "5.0",
        })
    }
}

/// The protocol version a complete CONNECT frame announces.
///
/// Accepts protocol name "MQTT" with level 4 (3.1.1) or 5 (5.0), and "MQIsdp" with level 3
/// (3.1). The errors tell apart what the server answers from what it just closes:
///
/// - [`Error::UnsupportedProtocolLevel`]: an MQTT CONNECT of another level; the server may answer
///   CONNACK return code 0x01 (3.1.1 [MQTT-3.1.2-2]) or reason code 0x84 (5.0 [MQTT-3.1.2-2])
///   and closes;
/// - [`Error::NotConnect`] ([MQTT-3.1.0-1]), [`Error::BadProtocolName`] ([MQTT-3.1.2-1]) and a
///   malformed fixed header: not an MQTT client; the server closes without answering.
///
/// Only the fixed header, protocol name and level are looked at; [`decode`] checks the rest.
pub fn connect_version(frame: &[u8]) -> Result<Version> {
    if let Some(&first) = frame.first()
        && first >> 4 != pt::CONNECT
    {
        return Err(Error::NotConnect {
            packet_type: first >> 4,
        });
    }
    let truncated = Error::Truncated {
        packet_type: pt::CONNECT,
    };
    let header = FixedHeader::parse(frame)?.ok_or_else(|| truncated.clone())?;
    check::fixed_header(&header, Version::V311)?;
    let body = frame
        .get(header.header_len..header.frame_len())
        .ok_or(truncated)?;
    check::protocol_version(body)
}

/// Decodes one complete frame, as delimited by [`frame_len`], received on a connection that
/// speaks `version`, into the unified MQTT 5.0 packet.
///
/// `frame` must hold exactly one frame ([`Error::FrameLength`] otherwise), no larger than
/// `max_packet_size` (0 = no limit). Both directions decode, so that tests and client simulators
/// can read what the server sends. MQTT 3.x packets are converted:
///
/// | MQTT 3.x | MQTT 5.0 |
/// | --- | --- |
/// | CONNECT | `Connect`, Clean Start = CleanSession, Session Expiry Interval 0 if clean, else `u32::MAX` (never expires); Will with default Will properties |
/// | CONNACK | `ConnectAck`, return code 0x01..=0x05 as reason code 0x84, 0x85, 0x88, 0x86, 0x87 |
/// | PUBLISH | `Publish` with default properties |
/// | PUBACK, PUBREC | `PublishAck`, reason Success |
/// | PUBREL, PUBCOMP | `PublishAck2`, reason Success |
/// | SUBSCRIBE | `Subscribe`, each QoS as default `SubscriptionOptions` with that QoS |
/// | SUBACK | `SubscribeAck`, 0x80 Failure as 0x80 Unspecified error |
/// | UNSUBSCRIBE, UNSUBACK | `Unsubscribe`, `UnsubscribeAck` without reason codes |
/// | PINGREQ, PINGRESP | the same |
/// | DISCONNECT | `Disconnect`, reason Normal disconnection |
///
/// MQTT 5.0 PUBLISH packets also carry `Some` properties, so that a message looks the same
/// whichever version it came in. The 5.0 short forms (a 2-byte PUBACK, `e0 00` DISCONNECT,
/// `f0 00` AUTH) decode to their defaults.
///
/// Before rmqtt-codec parses the body the frame is checked for the rules it does not enforce
/// (see [`Error`]): reserved packet types and fixed-header flags, QoS 3 and DUP on QoS 0 in
/// PUBLISH, Remaining Lengths the specification fixes, packet identifier 0, a CONNACK that
/// refuses the connection with Session Present set, a CONNECT whose version differs from
/// `version`, whose flags are inconsistent or that has bytes after its last field, SUBSCRIBE
/// options with reserved bits, QoS 3 or Retain Handling 3, and SUBSCRIBE or UNSUBSCRIBE without
/// topic filters. Topic names and filters are not validated beyond UTF-8
/// (and, in 3.x, being non-empty, [MQTT-4.7.3-1]): MQTT 5.0 answers a bad one with a PUBACK or
/// SUBACK reason code, which is the session layer's decision, as are wildcards in topic names
/// ([MQTT-3.3.2-2]) and U+0000 in strings ([MQTT-1.5.4-2]).
pub fn decode(frame: &[u8], version: Version, max_packet_size: u32) -> Result<v5::Packet> {
    let packet_type = frame.first().map_or(0, |first| first >> 4);
    let header = FixedHeader::parse(frame)?.ok_or(Error::Truncated { packet_type })?;
    let expected = header.frame_len();
    check_size(expected, max_packet_size)?;
    if frame.len() != expected {
        return Err(Error::FrameLength {
            expected,
            actual: frame.len(),
        });
    }
    let body = frame.get(header.header_len..).unwrap_or_default();
    let fixups = check::check(&header, body, version)?;

    let mut src = BytesMut::from(frame);
    if let Some(at) = fixups.v5_empty_client_id_flags_at
        && let Some(flags) = src.get_mut(header.header_len + at)
    {
        *flags |= 0x02;
    }
    let mut packet = match version {
        Version::V5 => run_decoder(&mut v5::Codec::new(0, 0), &mut src, packet_type)?,
        Version::V31 | Version::V311 => {
            convert::v3_to_v5(run_decoder(&mut v3::Codec::new(0), &mut src, packet_type)?)?
        }
    };
    if fixups.v5_empty_client_id_flags_at.is_some()
        && let v5::Packet::Connect(connect) = &mut packet
    {
        connect.clean_start = false;
    }
    Ok(packet)
}

/// Runs one of rmqtt-codec's stateful decoders over a buffer that holds exactly one frame.
fn run_decoder<D, P>(codec: &mut D, src: &mut BytesMut, packet_type: u8) -> Result<P>
where
    D: Decoder<Item = (P, u32), Error = DecodeError>,
{
    match codec.decode(src) {
        Ok(Some((packet, _))) if src.is_empty() => Ok(packet),
        Ok(Some(_)) => Err(Error::TrailingBytes {
            packet_type,
            extra: src.len(),
        }),
        Ok(None) => Err(Error::Truncated { packet_type }),
        Err(source) => Err(Error::decode(packet_type, source)),
    }
}

/// Appends `packet`, encoded for a connection that speaks `version`, to `out`.
///
/// For MQTT 5.0 the packet is written as it is, except that acknowledgements and DISCONNECT
/// without properties use their short forms (MQTT 5.0 §3.4.2.1, §3.14.2.1, §3.15.2.1): a
/// successful PUBACK, PUBREC, PUBREL or PUBCOMP takes 4 bytes (5 with another reason code), a
/// normal DISCONNECT is `e0 00` and a successful AUTH `f0 00`.
///
/// For MQTT 3.x the packet is converted back:
///
/// - CONNACK: the reason code becomes a return code through [`connack_v3_code`] and the
///   properties are dropped;
/// - SUBACK: a granted QoS stays, every refusal becomes 0x80 Failure; UNSUBACK loses its reason
///   codes, which 3.1.1 does not have;
/// - PUBACK, PUBREC, PUBREL, PUBCOMP: only the Packet Identifier remains, whatever the reason
///   code, because a 3.1.1 server cannot refuse a PUBLISH and must acknowledge it or close the
///   connection ([MQTT-3.3.5-2]);
/// - PUBLISH: the properties are dropped, so a Topic Alias must have been resolved into the
///   topic name ([`Error::EmptyTopicName`] otherwise);
/// - CONNECT, SUBSCRIBE, UNSUBSCRIBE (for client simulators): the 5.0 properties and subscription
///   options other than QoS are dropped, and a password needs a user name ([MQTT-3.1.2-22]);
/// - DISCONNECT is `e0 00` whatever its reason code;
/// - AUTH has no 3.x form: [`Error::NotInV3`].
///
/// In both versions a CONNACK that refuses the connection is sent with Session Present 0 (3.1.1
/// [MQTT-3.2.2-4], 5.0 [MQTT-3.2.2-6]), and a QoS 0 PUBLISH with DUP set is refused
/// ([MQTT-3.3.1-2]). On error nothing is left appended to `out`.
///
/// Two defects of rmqtt-codec 0.3 are corrected here: its 3.x encoder writes protocol level 4
/// even for an "MQIsdp" (3.1) CONNECT, which this function rewrites to 3, and it panics on a 3.x
/// packet whose Remaining Length exceeds 268,435,455 bytes, which this function refuses first
/// with [`Error::PacketTooLarge`].
pub fn encode(packet: &v5::Packet, version: Version, out: &mut BytesMut) -> Result<()> {
    let start = out.len();
    let result = encode_unchecked(packet, version, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_unchecked(packet: &v5::Packet, version: Version, out: &mut BytesMut) -> Result<()> {
    let packet_type = packet.packet_type() >> 4;
    if let v5::Packet::Publish(publish) = packet
        && publish.dup
        && publish.qos == QoS::AtMostOnce
    {
        return Err(Error::DupOnQos0);
    }
    match version {
        Version::V5 => {
            if encode_v5_short_form(packet, out) {
                return Ok(());
            }
            if let v5::Packet::ConnectAck(ack) = packet
                && ack.session_present
                && ack.reason_code != v5::ConnectAckReason::Success
            {
                // [MQTT-3.2.2-6]: a refusal has Session Present 0.
                let fixed = v5::ConnectAck {
                    session_present: false,
                    ..(**ack).clone()
                };
                return v5::Codec::new(0, 0)
                    .encode(fixed.into(), out)
                    .map_err(|source| Error::encode(packet_type, source));
            }
            if let v5::Packet::SubscribeAck(ack) = packet {
                // rmqtt-codec subtracts the reason-code count from its size limit unchecked.
                let size = ack.status.len().saturating_add(3);
                if size > MAX_REMAINING_LENGTH as usize {
                    return Err(Error::PacketTooLarge {
                        size,
                        max: MAX_REMAINING_LENGTH,
                    });
                }
            }
            v5::Codec::new(0, 0)
                .encode(packet.clone(), out)
                .map_err(|source| Error::encode(packet_type, source))
        }
        Version::V31 | Version::V311 => {
            let v3_packet = convert::v5_to_v3(packet, version)?;
            let size = v3_remaining_length(&v3_packet);
            if size > MAX_REMAINING_LENGTH as usize {
                return Err(Error::PacketTooLarge {
                    size,
                    max: MAX_REMAINING_LENGTH,
                });
            }
            let start = out.len();
            v3::Codec::new(0)
                .encode(v3_packet, out)
                .map_err(|source| Error::encode(packet_type, source))?;
            if version == Version::V31 && packet_type == pt::CONNECT {
                set_v31_level(out, start);
            }
            Ok(())
        }
    }
}

/// Writes the MQTT 5.0 short form of a packet that has one, and says whether it did.
///
/// PUBACK, PUBREC (§3.4.2.1, §3.5.2.1), PUBREL and PUBCOMP (§3.6.2.1, §3.7.2.1) without
/// properties omit the Property Length, and with reason code Success the reason code too;
/// DISCONNECT (§3.14.2.1) likewise with Normal disconnection; AUTH (§3.15.2.1) omits both only
/// with Success. rmqtt-codec always writes the long forms.
fn encode_v5_short_form(packet: &v5::Packet, out: &mut BytesMut) -> bool {
    let first_byte = packet.packet_type();
    match packet {
        v5::Packet::PublishAck(ack) | v5::Packet::PublishReceived(ack)
            if ack.properties.is_empty() && ack.reason_string.is_none() =>
        {
            put_short_ack(
                out,
                first_byte,
                ack.packet_id.get(),
                u8::from(ack.reason_code),
            );
            true
        }
        v5::Packet::PublishRelease(ack) | v5::Packet::PublishComplete(ack)
            if ack.properties.is_empty() && ack.reason_string.is_none() =>
        {
            put_short_ack(
                out,
                first_byte,
                ack.packet_id.get(),
                u8::from(ack.reason_code),
            );
            true
        }
        v5::Packet::Disconnect(disconnect)
            if disconnect.session_expiry_interval_secs.is_none()
                && disconnect.server_reference.is_none()
                && disconnect.reason_string.is_none()
                && disconnect.user_properties.is_empty() =>
        {
            match u8::from(disconnect.reason_code) {
                0 => out.extend_from_slice(&[first_byte, 0]),
                code => out.extend_from_slice(&[first_byte, 1, code]),
            }
            true
        }
        v5::Packet::Auth(auth)
            if auth.reason_code == v5::AuthReasonCode::Success
                && auth.auth_method.is_none()
                && auth.auth_data.is_none()
                && auth.reason_string.is_none()
                && auth.user_properties.is_empty() =>
        {
            out.extend_from_slice(&[first_byte, 0]);
            true
        }
        _ => false,
    }
}

fn put_short_ack(out: &mut BytesMut, first_byte: u8, packet_id: u16, reason: u8) {
    let [hi, lo] = packet_id.to_be_bytes();
    if reason == 0 {
        out.extend_from_slice(&[first_byte, 2, hi, lo]);
    } else {
        out.extend_from_slice(&[first_byte, 3, hi, lo, reason]);
    }
}

/// The Remaining Length rmqtt-codec's 3.x encoder will write for `packet`, computed as it does
/// (MQTT 3.1.1 §3), so that oversized packets are refused before its encoder panics on them.
fn v3_remaining_length(packet: &v3::Packet) -> usize {
    let field = |len: usize| len.saturating_add(2);
    match packet {
        v3::Packet::Connect(connect) => {
            let mut n = 4 + field(connect.protocol.name().len()) + field(connect.client_id.len());
            if let Some(will) = &connect.last_will {
                n = n
                    .saturating_add(field(will.topic.len()))
                    .saturating_add(field(will.message.len()));
            }
            if let Some(username) = &connect.username {
                n = n.saturating_add(field(username.len()));
            }
            if let Some(password) = &connect.password {
                n = n.saturating_add(field(password.len()));
            }
            n
        }
        v3::Packet::Publish(publish) => {
            let packet_id = if publish.qos == QoS::AtMostOnce { 0 } else { 2 };
            field(publish.topic.len())
                .saturating_add(packet_id)
                .saturating_add(publish.payload.len())
        }
        v3::Packet::ConnectAck(_)
        | v3::Packet::PublishAck { .. }
        | v3::Packet::PublishReceived { .. }
        | v3::Packet::PublishRelease { .. }
        | v3::Packet::PublishComplete { .. }
        | v3::Packet::UnsubscribeAck { .. } => 2,
        v3::Packet::Subscribe { topic_filters, .. } => {
            topic_filters.iter().fold(2usize, |n, (filter, _)| {
                n.saturating_add(field(filter.len()) + 1)
            })
        }
        v3::Packet::SubscribeAck { status, .. } => status.len().saturating_add(2),
        v3::Packet::Unsubscribe { topic_filters, .. } => topic_filters
            .iter()
            .fold(2usize, |n, filter| n.saturating_add(field(filter.len()))),
        v3::Packet::PingRequest | v3::Packet::PingResponse | v3::Packet::Disconnect => 0,
    }
}

/// Rewrites the protocol level of the MQTT 3.1 CONNECT encoded at `out[start..]` to 3.
///
/// rmqtt-codec's 3.x encoder writes the protocol name of the version ("MQIsdp") but always level
/// 4, a combination no MQTT 3.1 server accepts.
fn set_v31_level(out: &mut BytesMut, start: usize) {
    let Some(Ok(Some(header))) = out.get(start..).map(FixedHeader::parse) else {
        return;
    };
    let name_at = start + header.header_len + 2;
    let level_at = name_at + 6;
    if out.get(name_at..level_at) == Some(b"MQIsdp".as_slice())
        && let Some(level) = out.get_mut(level_at)
    {
        *level = Version::V31.level();
    }
}

/// The MQTT 3.1.1 CONNACK return code (MQTT 3.1.1 §3.2.2.3) for an MQTT 5.0 CONNACK reason code
/// (MQTT 5.0 §3.2.2.2), used when a 3.x client is answered.
///
/// | MQTT 5.0 reason | 3.1.1 return code |
/// | --- | --- |
/// | 0x00 Success | 0x00 Connection accepted |
/// | 0x84 Unsupported Protocol Version | 0x01 unacceptable protocol version |
/// | 0x85 Client Identifier not valid | 0x02 identifier rejected |
/// | 0x86 Bad User Name or Password | 0x04 bad user name or password |
/// | 0x87 Not authorized, 0x8A Banned | 0x05 not authorized |
/// | every other refusal (Server unavailable, Server busy, Quota exceeded, Connection rate exceeded, …) | 0x03 Server unavailable |
#[must_use]
pub const fn connack_v3_code(reason: v5::ConnectAckReason) -> u8 {
    convert::connack_down(reason)
}

#[cfg(test)]
mod tests;
