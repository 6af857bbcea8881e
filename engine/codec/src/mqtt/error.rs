//! Errors of the MQTT framing glue.
//!
//! Every rule the glue enforces before or around rmqtt-codec has its own variant, citing the
//! normative statement of MQTT 3.1.1 or 5.0 (OASIS) it comes from; whatever rmqtt-codec itself
//! rejects arrives wrapped in [`Error::Decode`] or [`Error::Encode`] together with the packet type.
//! The connection code rarely looks inside: it asks [`Error::disconnect_reason`] for the reason
//! code of the DISCONNECT an MQTT 5 server sends before closing, or [`Error::connack_reason`] for
//! the CONNACK it may answer a bad CONNECT with.

use rmqtt_codec::error::{DecodeError, EncodeError};
use rmqtt_codec::v5::{ConnectAckReason, DisconnectReasonCode, Packet};

use super::Version;
use super::frame::packet_type as pt;

/// Shorthand for results whose error is the MQTT glue [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while framing, decoding or encoding an MQTT packet.
///
/// Packet types are the 4-bit values of the fixed header (1 = CONNECT … 15 = AUTH).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Remaining Length field continues past its fourth byte (MQTT 3.1.1 §2.2.3, MQTT 5.0
    /// §1.5.5 and §2.1.4): the stream cannot be framed any further.
    #[error("MQTT remaining length field is longer than 4 bytes")]
    MalformedRemainingLength,

    /// The frame is larger than the Maximum Packet Size in force (MQTT 5.0 §3.1.2.11.4,
    /// [MQTT-3.2.2-15]), or than the 268,435,455-byte Remaining Length limit when encoding.
    #[error("MQTT packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The size of the whole frame (fixed header included), or of the Remaining Length when
        /// an encoding exceeds the protocol limit.
        size: usize,
        /// The limit that was exceeded.
        max: u32,
    },

    /// A Variable Byte Integer inside a packet (a property length, a Subscription Identifier)
    /// continues past its fourth byte (MQTT 5.0 §1.5.5).
    #[error("MQTT {} packet has a variable byte integer longer than 4 bytes", packet_name(*packet_type))]
    MalformedVariableInteger {
        /// The packet type.
        packet_type: u8,
    },

    /// The slice handed to `decode` is not exactly one frame: it is shorter or longer than its
    /// fixed header announces.
    #[error("MQTT frame slice holds {actual} bytes but its fixed header announces {expected}")]
    FrameLength {
        /// The length announced by the fixed header (header included).
        expected: usize,
        /// The length of the slice.
        actual: usize,
    },

    /// A field runs past the end of its packet.
    #[error("MQTT {} packet ends in the middle of a field", packet_name(*packet_type))]
    Truncated {
        /// The packet type.
        packet_type: u8,
    },

    /// Bytes are left over after the last field of a packet.
    #[error("MQTT {} packet has {extra} bytes after its last field", packet_name(*packet_type))]
    TrailingBytes {
        /// The packet type.
        packet_type: u8,
        /// The number of extra bytes.
        extra: usize,
    },

    /// A packet whose size the specification fixes has another Remaining Length, for example a
    /// PINGREQ with a body (MQTT 3.1.1 §3.12.1, MQTT 5.0 §3.12.1) or a 3.1.1 PUBACK that is not
    /// 2 bytes long (MQTT 3.1.1 §3.4.1).
    #[error(
        "MQTT {} packet has remaining length {actual}; it must be {expected}",
        packet_name(*packet_type)
    )]
    RemainingLength {
        /// The packet type.
        packet_type: u8,
        /// The required Remaining Length.
        expected: u32,
        /// The Remaining Length received.
        actual: u32,
    },

    /// The first packet of a connection is not a CONNECT ([MQTT-3.1.0-1]); the server closes the
    /// connection without answering.
    #[error("first MQTT packet is {}, not CONNECT", packet_name(*packet_type))]
    NotConnect {
        /// The packet type received.
        packet_type: u8,
    },

    /// The CONNECT protocol name is neither "MQTT" nor "MQIsdp" ([MQTT-3.1.2-1]): the peer does
    /// not speak MQTT and the server closes the connection without answering.
    #[error("CONNECT protocol name is neither \"MQTT\" nor \"MQIsdp\"")]
    BadProtocolName,

    /// The CONNECT protocol level is not one this server speaks under its protocol name (3 with
    /// "MQIsdp"; 4 or 5 with "MQTT"). The server answers CONNACK 0x01 (3.1.1, [MQTT-3.1.2-2]) or
    /// 0x84 Unsupported Protocol Version (5.0, [MQTT-3.1.2-2]) and closes.
    #[error("MQTT protocol level {level} is not supported")]
    UnsupportedProtocolLevel {
        /// The protocol level received.
        level: u8,
    },

    /// A CONNECT announces another protocol version than the one the frame is decoded for.
    #[error("CONNECT announces MQTT {packet} on a connection decoded as MQTT {connection}")]
    VersionMismatch {
        /// The version the caller decodes the connection with.
        connection: Version,
        /// The version the CONNECT announces.
        packet: Version,
    },

    /// The reserved bit 0 of the CONNECT flags is set ([MQTT-3.1.2-3]; a Malformed Packet in
    /// MQTT 5.0).
    #[error("CONNECT reserved flag is set")]
    ConnectReservedFlag,

    /// Will QoS or Will Retain is set while the Will Flag is not (3.1.1 [MQTT-3.1.2-13] and
    /// [MQTT-3.1.2-15]; 5.0 [MQTT-3.1.2-11] and [MQTT-3.1.2-13]).
    #[error("CONNECT sets Will QoS or Will Retain without the Will Flag")]
    InvalidWillFlags,

    /// The Will QoS is 3 (3.1.1 [MQTT-3.1.2-14]; 5.0 [MQTT-3.1.2-12], a Malformed Packet).
    #[error("CONNECT Will QoS is 3")]
    InvalidWillQos,

    /// An MQTT 3.1 or 3.1.1 CONNECT carries a password without a user name ([MQTT-3.1.2-22]);
    /// MQTT 5.0 allows it.
    #[error("MQTT 3.x CONNECT carries a password without a user name")]
    PasswordWithoutUsername,

    /// Packet type 0 (forbidden in both versions), or 15 (AUTH) on an MQTT 3.x connection where
    /// it is reserved (MQTT 3.1.1 §2.2.1, MQTT 5.0 §2.1.2).
    #[error("MQTT packet type {packet_type} is reserved")]
    ReservedPacketType {
        /// The packet type received.
        packet_type: u8,
    },

    /// The flag bits of the fixed header differ from the values the specification lists for the
    /// packet type (3.1.1 [MQTT-2.2.2-1], 5.0 [MQTT-2.1.3-1]; a Malformed Packet in 5.0).
    #[error("MQTT {} fixed header has reserved flags {flags:#06b}", packet_name(*packet_type))]
    ReservedFlags {
        /// The packet type.
        packet_type: u8,
        /// The four flag bits received.
        flags: u8,
    },

    /// A PUBLISH has both QoS bits set ([MQTT-3.3.1-4]; a Malformed Packet in 5.0).
    #[error("PUBLISH QoS is 3")]
    InvalidQos,

    /// A QoS 0 PUBLISH has its DUP flag set ([MQTT-3.3.1-2]).
    #[error("QoS 0 PUBLISH has the DUP flag set")]
    DupOnQos0,

    /// A packet that needs a non-zero Packet Identifier carries 0 (3.1.1 [MQTT-2.3.1-1], 5.0
    /// [MQTT-2.2.1-3]).
    #[error("MQTT {} packet has packet identifier 0", packet_name(*packet_type))]
    ZeroPacketId {
        /// The packet type.
        packet_type: u8,
    },

    /// A SUBSCRIBE or UNSUBSCRIBE has no topic filter (3.1.1 [MQTT-3.8.3-3] and
    /// [MQTT-3.10.3-2]; 5.0 [MQTT-3.8.3-2] and [MQTT-3.10.3-2]).
    #[error("MQTT {} packet has no topic filter", packet_name(*packet_type))]
    NoTopicFilters {
        /// The packet type.
        packet_type: u8,
    },

    /// Reserved bits of a SUBSCRIBE's requested-QoS or Subscription Options byte are set (3.1.1
    /// [MQTT-3.8.3-4], 5.0 [MQTT-3.8.3-5]; a Malformed Packet).
    #[error("SUBSCRIBE options byte {options:#04x} has reserved bits set")]
    ReservedSubscriptionBits {
        /// The options byte received.
        options: u8,
    },

    /// A SUBSCRIBE requests QoS 3 (3.1.1 [MQTT-3.8.3-4]; a Protocol Error in 5.0 §3.8.3.1).
    #[error("SUBSCRIBE options byte {options:#04x} requests QoS 3")]
    InvalidRequestedQos {
        /// The options byte received.
        options: u8,
    },

    /// An MQTT 5.0 SUBSCRIBE asks for Retain Handling 3, a Protocol Error (5.0 §3.8.3.1).
    #[error("SUBSCRIBE options byte {options:#04x} has Retain Handling 3")]
    InvalidRetainHandling {
        /// The options byte received.
        options: u8,
    },

    /// A CONNACK refuses the connection yet sets Session Present (3.1.1 [MQTT-3.2.2-4], 5.0
    /// [MQTT-3.2.2-6]).
    #[error("CONNACK sets Session Present with a non-zero return code")]
    SessionPresentOnRefusal,

    /// An MQTT 3.x CONNACK carries one of the reserved return codes 6..=255 (MQTT 3.1.1
    /// §3.2.2.3).
    #[error("CONNACK return code {code} is reserved")]
    ReservedConnackCode {
        /// The return code received.
        code: u8,
    },

    /// The packet has no MQTT 3.x form (AUTH exists only in MQTT 5.0, §3.15).
    #[error("MQTT {} packet does not exist in MQTT 3.x", packet_name(*packet_type))]
    NotInV3 {
        /// The packet type.
        packet_type: u8,
    },

    /// An MQTT 3.x PUBLISH would have an empty topic name ([MQTT-4.7.3-1]); MQTT 5.0 allows it
    /// only together with a Topic Alias, which MQTT 3.x does not have.
    #[error("MQTT 3.x PUBLISH needs a topic name; it has none")]
    EmptyTopicName,

    /// The session layer received a packet that may not travel in that direction or at that
    /// point of the session (for example a CONNACK from a client, or a second CONNECT,
    /// [MQTT-3.1.0-2]). Built with [`Error::unexpected_packet`].
    #[error("unexpected MQTT {} packet", packet_name(*packet_type))]
    UnexpectedPacket {
        /// The packet type.
        packet_type: u8,
    },

    /// rmqtt-codec rejected the packet body.
    #[error("MQTT {} packet could not be decoded: {source}", packet_name(*packet_type))]
    Decode {
        /// The packet type.
        packet_type: u8,
        /// The error rmqtt-codec reported.
        #[source]
        source: DecodeError,
    },

    /// rmqtt-codec could not encode the packet.
    #[error("MQTT {} packet could not be encoded: {source}", packet_name(*packet_type))]
    Encode {
        /// The packet type.
        packet_type: u8,
        /// The error rmqtt-codec reported.
        #[source]
        source: EncodeError,
    },
}

impl Error {
    /// An [`Error::UnexpectedPacket`] for `packet`, for the session layer to report a packet
    /// that is well formed but not allowed where it arrived.
    #[must_use]
    pub fn unexpected_packet(packet: &Packet) -> Self {
        Self::UnexpectedPacket {
            packet_type: packet.packet_type() >> 4,
        }
    }

    /// The MQTT 5.0 reason code of the DISCONNECT a server sends before closing the connection
    /// over this error (MQTT 5.0 §3.14.2.1 and §4.13).
    ///
    /// Packets that cannot be parsed give `MalformedPacket` (0x81), packets that parse but break
    /// a rule give `ProtocolError` (0x82), oversized packets `PacketTooLarge` (0x95). MQTT 3.x
    /// has no reason codes: a 3.x server just closes the connection.
    #[must_use]
    pub fn disconnect_reason(&self) -> DisconnectReasonCode {
        use DisconnectReasonCode as R;
        match self {
            Self::MalformedRemainingLength
            | Self::MalformedVariableInteger { .. }
            | Self::FrameLength { .. }
            | Self::Truncated { .. }
            | Self::TrailingBytes { .. }
            | Self::RemainingLength { .. }
            | Self::ConnectReservedFlag
            | Self::InvalidWillQos
            | Self::ReservedPacketType { .. }
            | Self::ReservedFlags { .. }
            | Self::InvalidQos
            | Self::ReservedSubscriptionBits { .. }
            | Self::ReservedConnackCode { .. } => R::MalformedPacket,
            Self::PacketTooLarge { .. } => R::PacketTooLarge,
            Self::NotConnect { .. }
            | Self::BadProtocolName
            | Self::UnsupportedProtocolLevel { .. }
            | Self::VersionMismatch { .. }
            | Self::InvalidWillFlags
            | Self::PasswordWithoutUsername
            | Self::DupOnQos0
            | Self::ZeroPacketId { .. }
            | Self::NoTopicFilters { .. }
            | Self::InvalidRequestedQos { .. }
            | Self::InvalidRetainHandling { .. }
            | Self::SessionPresentOnRefusal
            | Self::UnexpectedPacket { .. } => R::ProtocolError,
            Self::NotInV3 { .. } | Self::EmptyTopicName => R::ImplementationSpecificError,
            Self::Decode { source, .. } => decode_reason(source),
            Self::Encode { source, .. } => match source {
                EncodeError::OverMaxPacketSize { .. } => R::PacketTooLarge,
                _ => R::ImplementationSpecificError,
            },
        }
    }

    /// The reason code of the CONNACK a server may answer a CONNECT with when decoding it failed
    /// with this error, or `None` when the bytes are not a recognisable MQTT CONNECT and the
    /// server closes the connection without answering ([MQTT-3.1.2-1]).
    ///
    /// An unsupported protocol level gives `UnsupportedProtocolVersion`, which
    /// [`connack_v3_code`](super::connack_v3_code) turns into 3.1.1 return code 0x01
    /// ([MQTT-3.1.2-2]); an empty client identifier with a persistent 3.1.1 session gives
    /// `ClientIdentifierNotValid`, return code 0x02 ([MQTT-3.1.3-8]). Other errors give the
    /// CONNACK counterpart of [`Error::disconnect_reason`], which an MQTT 5.0 server may send
    /// (§4.13.1); an MQTT 3.1.1 server answers only the two cases above and closes the connection
    /// without a CONNACK for the rest ([MQTT-3.1.4-1]).
    #[must_use]
    pub fn connack_reason(&self) -> Option<ConnectAckReason> {
        use ConnectAckReason as C;
        match self {
            Self::NotConnect { .. } | Self::BadProtocolName | Self::MalformedRemainingLength => {
                None
            }
            Self::UnsupportedProtocolLevel { .. } | Self::VersionMismatch { .. } => {
                Some(C::UnsupportedProtocolVersion)
            }
            Self::Decode {
                source: DecodeError::InvalidClientId,
                ..
            } => Some(C::ClientIdentifierNotValid),
            other => Some(match other.disconnect_reason() {
                DisconnectReasonCode::MalformedPacket => C::MalformedPacket,
                DisconnectReasonCode::ProtocolError => C::ProtocolError,
                DisconnectReasonCode::PacketTooLarge => C::PacketTooLarge,
                DisconnectReasonCode::ImplementationSpecificError => C::ImplementationSpecificError,
                DisconnectReasonCode::NotAuthorized => C::NotAuthorized,
                DisconnectReasonCode::TopicNameInvalid => C::TopicNameInvalid,
                DisconnectReasonCode::PayloadFormatInvalid => C::PayloadFormatInvalid,
                _ => C::UnspecifiedError,
            }),
        }
    }

    pub(crate) fn decode(packet_type: u8, source: DecodeError) -> Self {
        Self::Decode {
            packet_type,
            source,
        }
    }

    pub(crate) fn encode(packet_type: u8, source: EncodeError) -> Self {
        Self::Encode {
            packet_type,
            source,
        }
    }
}

/// Classifies rmqtt-codec's decode errors by the definitions of MQTT 5.0 §1.2: a packet that
/// cannot be parsed is malformed, one that parses but breaks a rule is a protocol error.
///
/// This deliberately departs from rmqtt-codec's own `ToReasonCode` in two places: invalid UTF-8
/// is a Malformed Packet ([MQTT-1.5.4-1]), not "payload format invalid", and an unsupported
/// protocol level or packet type is a protocol error rather than "implementation specific".
fn decode_reason(source: &DecodeError) -> DisconnectReasonCode {
    use DisconnectReasonCode as R;
    match source {
        DecodeError::InvalidLength
        | DecodeError::MalformedPacket
        | DecodeError::Utf8Error
        | DecodeError::ConnectReservedFlagSet
        | DecodeError::ConnAckReservedFlagSet => R::MalformedPacket,
        DecodeError::InvalidProtocol
        | DecodeError::UnsupportedProtocolLevel
        | DecodeError::InvalidConnectFlags
        | DecodeError::InvalidClientId
        | DecodeError::UnsupportedPacketType
        | DecodeError::PacketIdRequired => R::ProtocolError,
        DecodeError::MaxSizeExceeded { .. } => R::PacketTooLarge,
        DecodeError::InvalidTopicFilter => R::TopicFilterInvalid,
        DecodeError::InvalidTopicName => R::TopicNameInvalid,
        DecodeError::Io(_) => R::UnspecifiedError,
    }
}

/// The name of a 4-bit packet type, for messages.
pub(crate) const fn packet_name(packet_type: u8) -> &'static str {
    match packet_type {
        pt::CONNECT => "CONNECT",
        pt::CONNACK => "CONNACK",
        pt::PUBLISH => "PUBLISH",
        pt::PUBACK => "PUBACK",
        pt::PUBREC => "PUBREC",
        pt::PUBREL => "PUBREL",
        pt::PUBCOMP => "PUBCOMP",
        pt::SUBSCRIBE => "SUBSCRIBE",
        pt::SUBACK => "SUBACK",
        pt::UNSUBSCRIBE => "UNSUBSCRIBE",
        pt::UNSUBACK => "UNSUBACK",
        pt::PINGREQ => "PINGREQ",
        pt::PINGRESP => "PINGRESP",
        pt::DISCONNECT => "DISCONNECT",
        pt::AUTH => "AUTH",
        _ => "reserved",
    }
}
