//! Checks the glue makes on a frame before rmqtt-codec decodes it.
//!
//! rmqtt-codec 0.3 parses packet bodies faithfully but is lenient or vague about several rules
//! of the fixed header and of CONNECT and SUBSCRIBE: it reports reserved fixed-header flags as an
//! "unsupported packet type", masks the reserved bits of 3.1.1 requested-QoS bytes away, ignores
//! bytes after the end of a CONNECT or after a PINGREQ, accepts a 5.0 CONNECT whose Will QoS is
//! set without a Will, accepts a CONNACK that refuses the connection but claims a session, and
//! reports packet identifier 0 as malformed. [`check`] enforces those
//! rules first, so that each violation gets its own [`Error`] and the reason code the
//! specification asks for; everything else is left to rmqtt-codec.

use super::Version;
use super::error::{Error, Result};
use super::frame::{FixedHeader, Reader, packet_type as pt};

/// What [`check`] found that the caller must work around when handing the frame to rmqtt-codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fixups {
    /// The offset, within the body, of the flags byte of an MQTT 5.0 CONNECT that has an empty
    /// Client Identifier and Clean Start 0.
    ///
    /// MQTT 5.0 allows that combination ([MQTT-3.1.3-6]: the server assigns an identifier and
    /// may resume nothing), but rmqtt-codec 0.3 applies the 3.1.1 rule [MQTT-3.1.3-7] to both
    /// versions and rejects it. `decode` sets the Clean Start bit in its copy of the frame and
    /// clears `clean_start` in the decoded packet again.
    pub(crate) v5_empty_client_id_flags_at: Option<usize>,
}

/// Reads the protocol name and level at the start of a CONNECT body (MQTT 3.1.1 §3.1.2.1 and
/// §3.1.2.2, MQTT 5.0 §3.1.2.1 and §3.1.2.2).
pub(crate) fn protocol_version(body: &[u8]) -> Result<Version> {
    let mut r = Reader::new(body, pt::CONNECT);
    let name = r.prefixed()?;
    let level = r.u8()?;
    match (name, level) {
        (b"MQIsdp", 3) => Ok(Version::V31),
        (b"MQTT", 4) => Ok(Version::V311),
        (b"MQTT", 5) => Ok(Version::V5),
        (b"MQTT" | b"MQIsdp", level) => Err(Error::UnsupportedProtocolLevel { level }),
        _ => Err(Error::BadProtocolName),
    }
}

/// Checks the fixed header of a frame against its packet type (MQTT 3.1.1 §2.2.2, MQTT 5.0
/// §2.1.3 and §3.3.1).
pub(crate) fn fixed_header(header: &FixedHeader, version: Version) -> Result<()> {
    let packet_type = header.packet_type();
    let flags = header.flags();
    match packet_type {
        0 => Err(Error::ReservedPacketType { packet_type }),
        pt::AUTH if !version.is_v5() => Err(Error::ReservedPacketType { packet_type }),
        pt::PUBLISH => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                Err(Error::InvalidQos)
            } else if qos == 0 && flags & 0b1000 != 0 {
                Err(Error::DupOnQos0)
            } else {
                Ok(())
            }
        }
        pt::PUBREL | pt::SUBSCRIBE | pt::UNSUBSCRIBE if flags != 0b0010 => {
            Err(Error::ReservedFlags { packet_type, flags })
        }
        pt::PUBREL | pt::SUBSCRIBE | pt::UNSUBSCRIBE => Ok(()),
        _ if flags != 0 => Err(Error::ReservedFlags { packet_type, flags }),
        _ => Ok(()),
    }
}

/// Checks one complete frame whose fixed header is `header` and whose body (variable header and
/// payload) is `body`, as received on a connection that speaks `version`.
pub(crate) fn check(header: &FixedHeader, body: &[u8], version: Version) -> Result<Fixups> {
    fixed_header(header, version)?;
    let packet_type = header.packet_type();
    if let Some(expected) = fixed_remaining_length(packet_type, version)
        && header.remaining_length != expected
    {
        return Err(Error::RemainingLength {
            packet_type,
            expected,
            actual: header.remaining_length,
        });
    }
    if packet_id_is_zero(header, body) {
        return Err(Error::ZeroPacketId { packet_type });
    }
    // 3.1.1 [MQTT-3.2.2-4], 5.0 [MQTT-3.2.2-6]: a refusal has Session Present 0.
    if packet_type == pt::CONNACK
        && let [flags, code, ..] = body
        && flags & 0x01 != 0
        && *code != 0
    {
        return Err(Error::SessionPresentOnRefusal);
    }
    match packet_type {
        pt::CONNECT => connect(body, version),
        pt::SUBSCRIBE => subscribe(body, version).map(|()| Fixups::default()),
        pt::UNSUBSCRIBE => unsubscribe(body, version).map(|()| Fixups::default()),
        _ => Ok(Fixups::default()),
    }
}

/// The Remaining Length a packet type must have, where the specification fixes one.
///
/// PINGREQ and PINGRESP have no body in either version (§3.12.1, §3.13.1). In MQTT 3.x, CONNACK
/// and the acknowledgements carry exactly two bytes and DISCONNECT none (MQTT 3.1.1 §3.2.1,
/// §3.4.1–§3.7.1, §3.11.1, §3.14.1); MQTT 5.0 lets them carry reason codes and properties.
const fn fixed_remaining_length(packet_type: u8, version: Version) -> Option<u32> {
    match packet_type {
        pt::PINGREQ | pt::PINGRESP => Some(0),
        pt::DISCONNECT if !version.is_v5() => Some(0),
        pt::CONNACK | pt::PUBACK | pt::PUBREC | pt::PUBREL | pt::PUBCOMP | pt::UNSUBACK
            if !version.is_v5() =>
        {
            Some(2)
        }
        _ => None,
    }
}

/// Whether the frame carries a Packet Identifier of 0 where one is required (3.1.1
/// [MQTT-2.3.1-1], 5.0 [MQTT-2.2.1-3]). A body too short to hold one is left to the decoder.
fn packet_id_is_zero(header: &FixedHeader, body: &[u8]) -> bool {
    let offset = match header.packet_type() {
        pt::PUBLISH if header.flags() & 0b0110 != 0 => match body {
            [hi, lo, ..] => 2 + usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => return false,
        },
        pt::PUBACK..=pt::UNSUBACK => 0,
        _ => return false,
    };
    matches!(body.get(offset..), Some([0, 0, ..]))
}

/// Checks a CONNECT body: protocol version, reserved and Will flags, and that its fields end
/// exactly where the packet does (MQTT 3.1.1 §3.1, MQTT 5.0 §3.1).
fn connect(body: &[u8], version: Version) -> Result<Fixups> {
    let found = protocol_version(body)?;
    if found != version {
        return Err(Error::VersionMismatch {
            connection: version,
            packet: found,
        });
    }
    let mut r = Reader::new(body, pt::CONNECT);
    r.prefixed()?; // protocol name
    r.u8()?; // protocol level
    let flags_at = r.position();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(Error::ConnectReservedFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password = flags & 0x40 != 0;
    let username = flags & 0x80 != 0;
    if !will && (will_qos != 0 || will_retain) {
        return Err(Error::InvalidWillFlags);
    }
    if will && will_qos == 3 {
        return Err(Error::InvalidWillQos);
    }
    if password && !username && !version.is_v5() {
        return Err(Error::PasswordWithoutUsername);
    }

    r.u16()?; // keep alive
    if version.is_v5() {
        r.skip_properties()?;
    }
    let client_id = r.prefixed()?;
    if will {
        if version.is_v5() {
            r.skip_properties()?;
        }
        r.prefixed()?; // will topic
        r.prefixed()?; // will payload
    }
    if username {
        r.prefixed()?;
    }
    if password {
        r.prefixed()?;
    }
    if !r.is_empty() {
        return Err(Error::TrailingBytes {
            packet_type: pt::CONNECT,
            extra: r.remaining(),
        });
    }
    Ok(Fixups {
        v5_empty_client_id_flags_at: (version.is_v5() && client_id.is_empty() && !clean_start)
            .then_some(flags_at),
    })
}

/// Checks the topic filters and options of a SUBSCRIBE body (MQTT 3.1.1 §3.8.3, MQTT 5.0
/// §3.8.3). The filters themselves are left to the session layer, which answers an invalid one
/// with its own SUBACK reason code.
fn subscribe(body: &[u8], version: Version) -> Result<()> {
    let mut r = Reader::new(body, pt::SUBSCRIBE);
    r.u16()?; // packet identifier
    if version.is_v5() {
        r.skip_properties()?;
    }
    if r.is_empty() {
        return Err(Error::NoTopicFilters {
            packet_type: pt::SUBSCRIBE,
        });
    }
    while !r.is_empty() {
        r.prefixed()?; // topic filter
        let options = r.u8()?;
        let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
        if options & reserved != 0 {
            return Err(Error::ReservedSubscriptionBits { options });
        }
        if options & 0b11 == 3 {
            return Err(Error::InvalidRequestedQos { options });
        }
        if (options >> 4) & 0b11 == 3 {
            return Err(Error::InvalidRetainHandling { options });
        }
    }
    Ok(())
}

/// Checks that an UNSUBSCRIBE body has at least one topic filter (MQTT 3.1.1 [MQTT-3.10.3-2],
/// MQTT 5.0 [MQTT-3.10.3-2]).
fn unsubscribe(body: &[u8], version: Version) -> Result<()> {
    let mut r = Reader::new(body, pt::UNSUBSCRIBE);
    r.u16()?; // packet identifier
    if version.is_v5() {
        r.skip_properties()?;
    }
    if r.is_empty() {
        return Err(Error::NoTopicFilters {
            packet_type: pt::UNSUBSCRIBE,
        });
    }
    Ok(())
}
