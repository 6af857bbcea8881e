//! CoAP messages on the wire (RFC 7252 §3): strict decoding, encoding, option access and the
//! answers a server builds.
//!
//! [`decode`] reads one UDP datagram into coap-lite's [`Packet`], enforcing what RFC 7252 requires
//! of a recipient and coap-lite does not check: version 1 (§3), token lengths 9–15 as a format
//! error (§3), empty messages with nothing after the header (§4.1), no payload marker without a
//! payload (§3), no reserved code classes 1, 6 and 7 (§12.1), and the option rules of §5.4:
//! unrecognized critical options, known options with a value of the wrong length and repeated
//! non-repeatable options are rejected when critical and dropped when elective. The
//! [`DecodeError`] tells the caller what to count ([`DecodeError::reason`]) and what to send back
//! ([`DecodeError::answer`]: an RST, a 4.02 Bad Option, or nothing).
//!
//! Option values are raw bytes; Uri-Path, Uri-Query and Location-Path are UTF-8 strings without
//! percent-encoding (§6.4), read with [`uri_path`], [`uri_query`] and [`location_path`].

#[cfg(test)]
mod tests;

use std::collections::LinkedList;
use std::fmt;

use coap_lite::{
    CoapOption, Header, HeaderRaw, MessageClass, MessageType, Packet, RequestType, ResponseType,
};

/// The only CoAP version (RFC 7252 §3).
pub const VERSION: u8 = 1;

/// Size of the fixed header in bytes (RFC 7252 §3).
pub const HEADER_LEN: usize = 4;

/// The longest token; lengths 9–15 are reserved (RFC 7252 §3).
pub const MAX_TOKEN_LEN: usize = 8;

/// The byte that separates options from the payload (RFC 7252 §3).
pub const PAYLOAD_MARKER: u8 = 0xFF;

/// The largest message [`encode`] produces: the largest UDP payload over IPv4.
pub const MAX_DATAGRAM_LEN: usize = 65_507;

/// The Max-Age a response has when it carries no Max-Age option (RFC 7252 §5.10.5).
pub const DEFAULT_MAX_AGE_SECS: u32 = 60;

/// Content-Format numbers fleetgate uses (RFC 7252 §12.3 and the IANA registry).
pub mod content_format {
    /// `text/plain; charset=utf-8`, used for diagnostic payloads.
    pub const TEXT_PLAIN: u16 = 0;
    /// `application/link-format` (RFC 6690): register bodies and `/.well-known/core`.
    pub const LINK_FORMAT: u16 = 40;
    /// `application/octet-stream`: codec payloads of commands and reports.
    pub const OCTET_STREAM: u16 = 42;
    /// `application/json`.
    pub const JSON: u16 = 50;
    /// `application/cbor`.
    pub const CBOR: u16 = 60;
    /// `application/senml+json`.
    pub const SENML_JSON: u16 = 110;
    /// `application/senml+cbor`.
    pub const SENML_CBOR: u16 = 112;
    /// `application/vnd.oma.lwm2m+tlv`.
    pub const LWM2M_TLV: u16 = 11_542;
    /// `application/vnd.oma.lwm2m+json`.
    pub const LWM2M_JSON: u16 = 11_543;
    /// `application/vnd.oma.lwm2m+cbor`.
    pub const LWM2M_CBOR: u16 = 11_544;
}

/// The fixed 4-byte header as read from the wire, before any other check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawHeader {
    /// Version field (2 bits); 1 is the only valid value.
    pub version: u8,
    /// Type field (2 bits): 0 CON, 1 NON, 2 ACK, 3 RST.
    pub message_type: u8,
    /// Token Length field (4 bits).
    pub token_length: u8,
    /// Code byte: class in the top 3 bits, detail in the low 5.
    pub code: u8,
    /// Message ID.
    pub message_id: u16,
}

impl RawHeader {
    /// Reads the header from the first four bytes, or `None` when there are fewer.
    #[must_use]
    pub fn parse(datagram: &[u8]) -> Option<Self> {
        let [b0, code, m0, m1] = *datagram.first_chunk::<HEADER_LEN>()?;
        Some(Self {
            version: b0 >> 6,
            message_type: (b0 >> 4) & 0x03,
            token_length: b0 & 0x0F,
            code,
            message_id: u16::from_be_bytes([m0, m1]),
        })
    }

    /// The message type.
    #[must_use]
    pub const fn message_type(&self) -> MessageType {
        match self.message_type & 0x03 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }

    /// Whether the message is confirmable (and may therefore be answered with RST).
    #[must_use]
    pub const fn is_confirmable(&self) -> bool {
        self.message_type == 0
    }

    /// Whether the code is a request method (0.01–0.31).
    #[must_use]
    pub const fn is_request(&self) -> bool {
        self.code != 0 && self.code >> 5 == 0
    }
}

/// What is malformed in a message whose header was fine ([`DecodeError::Format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FormatProblem {
    /// The datagram ends inside the token.
    TruncatedToken,
    /// An option's delta nibble is 15 without being the payload marker.
    OptionDelta15,
    /// An option's length nibble is 15.
    OptionLength15,
    /// The datagram ends inside an option's extended fields or value.
    TruncatedOption,
    /// Option deltas add up beyond option number 65535.
    OptionNumberOverflow,
    /// A payload marker with no payload after it.
    EmptyPayload,
    /// A type that cannot carry the code: an empty NON, an ACK carrying a request, an RST that
    /// is not empty (RFC 7252 §4.2, §4.3).
    TypeAndCode,
}

impl fmt::Display for FormatProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TruncatedToken => "the datagram ends inside the token",
            Self::OptionDelta15 => "option delta 15 outside the payload marker",
            Self::OptionLength15 => "option length 15",
            Self::TruncatedOption => "the datagram ends inside an option",
            Self::OptionNumberOverflow => "option number beyond 65535",
            Self::EmptyPayload => "payload marker without payload",
            Self::TypeAndCode => "message type cannot carry this code",
        })
    }
}

/// Why an option made a message unprocessable ([`DecodeError::BadOption`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadOptionCause {
    /// A critical option fleetgate does not know (RFC 7252 §5.4.1).
    Unrecognized,
    /// A known critical option whose value length is outside its range (§5.4.3).
    BadLength,
    /// A second occurrence of a critical option that is not repeatable (§5.4.5).
    Repeated,
}

/// Why a datagram could not be decoded into a message.
///
/// Every variant past [`DecodeError::Short`] carries the [`RawHeader`], so the caller can answer
/// without decoding again: [`DecodeError::answer`] gives the bytes to send back, if any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than the 4 header bytes.
    #[error("datagram of {len} bytes is shorter than the 4-byte CoAP header")]
    Short {
        /// Number of bytes received.
        len: usize,
    },
    /// A version other than 1; RFC 7252 §3 has such messages silently ignored.
    #[error("CoAP version {}, only version 1 exists", header.version)]
    Version {
        /// The header as read.
        header: RawHeader,
    },
    /// Token length 9–15, a message format error (RFC 7252 §3).
    #[error("token length {} is reserved; at most 8", header.token_length)]
    TokenLength {
        /// The header as read.
        header: RawHeader,
    },
    /// A code in the reserved classes 1, 6 or 7 (RFC 7252 §12.1).
    #[error("code {}.{:02} is in a reserved class", header.code >> 5, header.code & 0x1F)]
    ReservedCode {
        /// The header as read.
        header: RawHeader,
    },
    /// An empty message (code 0.00) with a token length or bytes after the header (§4.1).
    #[error("empty message (code 0.00) with token length {} and {len} bytes after the header", header.token_length)]
    EmptyWithData {
        /// The header as read.
        header: RawHeader,
        /// Number of bytes after the header.
        len: usize,
    },
    /// A malformed token, option or payload marker (RFC 7252 §3).
    #[error("malformed CoAP message: {problem}")]
    Format {
        /// The header as read.
        header: RawHeader,
        /// What is malformed.
        problem: FormatProblem,
    },
    /// A critical option that cannot be processed (RFC 7252 §5.4.1): a confirmable request is
    /// answered 4.02 Bad Option, a confirmable response is rejected with RST, anything else is
    /// dropped.
    #[error("critical option {number} rejected: {cause:?}")]
    BadOption {
        /// The header as read.
        header: RawHeader,
        /// The message's token, for the 4.02 answer.
        token: Vec<u8>,
        /// The first offending option number.
        number: u16,
        /// Why it was rejected.
        cause: BadOptionCause,
    },
}

impl DecodeError {
    /// A short label for `fleetgate_coap_datagrams_rejected_total{reason}`: `short`, `version`,
    /// `token_length`, `empty_with_data`, `format` (also for a reserved code class) or
    /// `bad_option`.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Short { .. } => "short",
            Self::Version { .. } => "version",
            Self::TokenLength { .. } => "token_length",
            Self::ReservedCode { .. } | Self::Format { .. } => "format",
            Self::EmptyWithData { .. } => "empty_with_data",
            Self::BadOption { .. } => "bad_option",
        }
    }

    /// The header, when at least four bytes arrived.
    #[must_use]
    pub const fn header(&self) -> Option<&RawHeader> {
        match self {
            Self::Short { .. } => None,
            Self::Version { header }
            | Self::TokenLength { header }
            | Self::ReservedCode { header }
            | Self::EmptyWithData { header, .. }
            | Self::Format { header, .. }
            | Self::BadOption { header, .. } => Some(header),
        }
    }

    /// The RST to send back (type 3, code 0.00, the same message id, no token), when the header
    /// could be read and the message was confirmable (RFC 7252 §4.2); `None` when the datagram
    /// is to be dropped silently. Also `None` for a version other than 1, which RFC 7252 §3 has
    /// ignored.
    ///
    /// A confirmable request with a bad critical option gets an RST here too, but RFC 7252
    /// §5.4.1 wants it answered 4.02 Bad Option: [`DecodeError::answer`] gives that answer, and
    /// is what a server should send.
    #[must_use]
    pub fn reset(&self) -> Option<Vec<u8>> {
        let header = self.header()?;
        if matches!(self, Self::Version { .. }) || !header.is_confirmable() {
            return None;
        }
        Some(reset_bytes(header.message_id).to_vec())
    }

    /// What to send back, if anything: the 4.02 Bad Option piggybacked response (with the
    /// diagnostic payload `bad option N`) for a confirmable request with a bad critical option,
    /// otherwise [`DecodeError::reset`].
    #[must_use]
    pub fn answer(&self) -> Option<Vec<u8>> {
        if let Self::BadOption {
            header,
            token,
            number,
            ..
        } = self
            && header.is_confirmable()
            && header.is_request()
            && let Ok(tkl) = u8::try_from(token.len())
            && usize::from(tkl) <= MAX_TOKEN_LEN
        {
            let diagnostic = format!("bad option {number}");
            let mut out = Vec::with_capacity(HEADER_LEN + token.len() + 1 + diagnostic.len());
            let [m0, m1] = header.message_id.to_be_bytes();
            out.extend_from_slice(&[0x60 | tkl, 0x82, m0, m1]);
            out.extend_from_slice(token);
            out.push(PAYLOAD_MARKER);
            out.extend_from_slice(diagnostic.as_bytes());
            return Some(out);
        }
        self.reset()
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The header's version is not 1.
    #[error("CoAP version {version}; only version 1 can be sent")]
    Version {
        /// The version in the packet's header.
        version: u8,
    },
    /// The token is longer than 8 bytes, or the header's token length disagrees with it.
    #[error("token of {len} bytes with token length field {field}; tokens hold at most 8 bytes")]
    TokenLength {
        /// The token's length.
        len: usize,
        /// The header's token length field.
        field: u8,
    },
    /// A code in the reserved classes 1, 6 or 7.
    #[error("code {}.{:02} is in a reserved class", code >> 5, code & 0x1F)]
    ReservedCode {
        /// The code byte.
        code: u8,
    },
    /// An empty message (code 0.00) with a token, options or payload.
    #[error("an empty message (code 0.00) carries no token, option or payload")]
    EmptyWithData,
    /// An empty NON, an ACK carrying a request or an RST that is not empty (RFC 7252 §4.2,
    /// §4.3).
    #[error("message type {message_type} cannot carry code {}.{:02}", code >> 5, code & 0x1F)]
    TypeAndCode {
        /// The type field: 0 CON, 1 NON, 2 ACK, 3 RST.
        message_type: u8,
        /// The code byte.
        code: u8,
    },
    /// A known option with a value of the wrong length, or repeated though not repeatable.
    #[error("option {number} has a value of {len} bytes or is repeated; allowed: {min}..={max} bytes{}", if *repeatable { "" } else { ", once" })]
    OptionValue {
        /// The option number.
        number: u16,
        /// The length of the offending value.
        len: usize,
        /// Shortest allowed value.
        min: usize,
        /// Longest allowed value.
        max: usize,
        /// Whether the option may occur more than once.
        repeatable: bool,
    },
    /// The message would exceed [`MAX_DATAGRAM_LEN`].
    #[error("message of at least {len} bytes exceeds the {max}-byte datagram limit")]
    TooLong {
        /// The (least) size of the encoded message.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// coap-lite refused the packet.
    #[error("coap-lite refused the packet: {0}")]
    Library(String),
}

/// What RFC 7252 (and RFC 7641, 7959, 7967) says about a known option.
#[derive(Debug, Clone, Copy)]
struct OptionRule {
    number: u16,
    repeatable: bool,
    min: usize,
    max: usize,
}

const fn rule(number: u16, repeatable: bool, min: usize, max: usize) -> OptionRule {
    OptionRule {
        number,
        repeatable,
        min,
        max,
    }
}

/// The options fleetgate recognizes, with their value lengths (RFC 7252 §5.10 table 4,
/// RFC 7641 §2, RFC 7959 §2.1 and §4, RFC 7967 §2). Every other critical option is rejected.
const OPTION_RULES: &[OptionRule] = &[
    rule(1, true, 0, 8),      // If-Match
    rule(3, false, 1, 255),   // Uri-Host
    rule(4, true, 1, 8),      // ETag
    rule(5, false, 0, 0),     // If-None-Match
    rule(6, false, 0, 3),     // Observe
    rule(7, false, 0, 2),     // Uri-Port
    rule(8, true, 0, 255),    // Location-Path
    rule(11, true, 0, 255),   // Uri-Path
    rule(12, false, 0, 2),    // Content-Format
    rule(14, false, 0, 4),    // Max-Age
    rule(15, true, 0, 255),   // Uri-Query
    rule(17, false, 0, 2),    // Accept
    rule(20, true, 0, 255),   // Location-Query
    rule(23, false, 0, 3),    // Block2
    rule(27, false, 0, 3),    // Block1
    rule(28, false, 0, 4),    // Size2
    rule(35, false, 1, 1034), // Proxy-Uri
    rule(39, false, 1, 255),  // Proxy-Scheme
    rule(60, false, 0, 4),    // Size1
    rule(258, false, 0, 1),   // No-Response
];

/// The option numbers [`decode`] recognizes; other critical options make it fail with
/// [`DecodeError::BadOption`].
pub const KNOWN_OPTIONS: [u16; 20] = {
    let mut out = [0; 20];
    let mut i = 0;
    while i < OPTION_RULES.len() {
        out[i] = OPTION_RULES[i].number;
        i += 1;
    }
    out
};

fn option_rule(number: u16) -> Option<&'static OptionRule> {
    OPTION_RULES.iter().find(|r| r.number == number)
}

/// Whether a message type can carry a code (RFC 7252 §4.2, §4.3): NON is never empty, ACK
/// never carries a request, RST is always empty.
const fn type_fits_code(message_type: u8, code: u8) -> bool {
    let request = code != 0 && code >> 5 == 0;
    match message_type & 0x03 {
        1 => code != 0,
        2 => !request,
        3 => code == 0,
        _ => true,
    }
}

/// Whether an option number is critical (odd) (RFC 7252 §5.4.6).
#[must_use]
pub const fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

/// Reads an extended option delta or length (RFC 7252 §3.1).
fn extended(nibble: u8, bytes: &[u8]) -> Result<(u32, &[u8]), FormatProblem> {
    match nibble {
        0..=12 => Ok((u32::from(nibble), bytes)),
        13 => match bytes.split_first() {
            Some((&b, rest)) => Ok((u32::from(b) + 13, rest)),
            None => Err(FormatProblem::TruncatedOption),
        },
        14 => match bytes.split_first_chunk::<2>() {
            Some((&b, rest)) => Ok((u32::from(u16::from_be_bytes(b)) + 269, rest)),
            None => Err(FormatProblem::TruncatedOption),
        },
        _ => Err(FormatProblem::OptionDelta15),
    }
}

/// Decodes one datagram into a message. Never panics.
///
/// Checks run in this order, and the first failure is returned: at least 4 bytes, version 1,
/// token length ≤ 8, code class not reserved, an empty message with nothing after its header,
/// a type that can carry the code (no empty NON, no request in an ACK, no RST that is not
/// empty), the token present, options and payload well formed (a payload marker must be
/// followed by at least one byte), and finally the option rules of RFC 7252 §5.4 (see the
/// module doc). Elective options that break those rules are dropped from the returned packet,
/// as §5.4.1 says unrecognized elective options are ignored. Request method codes 0.08–0.31 are
/// accepted; the caller answers them 4.05 Method Not Allowed.
pub fn decode(datagram: &[u8]) -> Result<Packet, DecodeError> {
    let Some(header) = RawHeader::parse(datagram) else {
        return Err(DecodeError::Short {
            len: datagram.len(),
        });
    };
    if header.version != VERSION {
        return Err(DecodeError::Version { header });
    }
    let tkl = usize::from(header.token_length);
    if tkl > MAX_TOKEN_LEN {
        return Err(DecodeError::TokenLength { header });
    }
    if matches!(header.code >> 5, 1 | 6 | 7) {
        return Err(DecodeError::ReservedCode { header });
    }
    let rest = &datagram[HEADER_LEN..];
    if header.code == 0 && (tkl != 0 || !rest.is_empty()) {
        return Err(DecodeError::EmptyWithData {
            header,
            len: rest.len(),
        });
    }
    let format = |problem| DecodeError::Format { header, problem };
    if !type_fits_code(header.message_type, header.code) {
        return Err(format(FormatProblem::TypeAndCode));
    }
    let Some((token, mut rest)) = rest.split_at_checked(tkl) else {
        return Err(format(FormatProblem::TruncatedToken));
    };

    let mut packet = Packet::new();
    let raw = HeaderRaw::try_from(datagram).map_err(|_| DecodeError::Short {
        len: datagram.len(),
    })?;
    packet.header = Header::from_raw(&raw);
    packet.set_token(token.to_vec());

    let mut number: u32 = 0;
    while let Some((&first, after)) = rest.split_first() {
        if first == PAYLOAD_MARKER {
            if after.is_empty() {
                return Err(format(FormatProblem::EmptyPayload));
            }
            packet.payload = after.to_vec();
            break;
        }
        let (delta, after) = extended(first >> 4, after).map_err(format)?;
        let (length, after) = match extended(first & 0x0F, after) {
            Ok(read) => read,
            Err(FormatProblem::OptionDelta15) => {
                return Err(format(FormatProblem::OptionLength15));
            }
            Err(problem) => return Err(format(problem)),
        };
        number += delta;
        let Ok(option) = u16::try_from(number) else {
            return Err(format(FormatProblem::OptionNumberOverflow));
        };
        let Some((value, after)) = usize::try_from(length)
            .ok()
            .and_then(|len| after.split_at_checked(len))
        else {
            return Err(format(FormatProblem::TruncatedOption));
        };
        packet.add_option(CoapOption::from(option), value.to_vec());
        rest = after;
    }

    check_options(packet, header)
}

/// Whether one occurrence of an option breaks RFC 7252 §5.4.1, §5.4.3 or §5.4.5.
fn violation(number: u16, index: usize, value: &[u8]) -> Option<BadOptionCause> {
    match option_rule(number) {
        None if is_critical(number) => Some(BadOptionCause::Unrecognized),
        None => None,
        Some(rule) if index > 0 && !rule.repeatable => Some(BadOptionCause::Repeated),
        Some(rule) if !(rule.min..=rule.max).contains(&value.len()) => {
            Some(BadOptionCause::BadLength)
        }
        Some(_) => None,
    }
}

/// The option rules of RFC 7252 §5.4 applied to a freshly decoded packet: the first bad
/// critical option fails, bad elective ones are dropped.
fn check_options(packet: Packet, header: RawHeader) -> Result<Packet, DecodeError> {
    let mut dropped = false;
    for (&number, values) in packet.options() {
        for (index, value) in values.iter().enumerate() {
            let Some(cause) = violation(number, index, value) else {
                continue;
            };
            if is_critical(number) {
                return Err(DecodeError::BadOption {
                    header,
                    token: packet.get_token().to_vec(),
                    number,
                    cause,
                });
            }
            dropped = true;
        }
    }
    if !dropped {
        return Ok(packet);
    }
    let mut kept = Packet::new();
    kept.header = packet.header.clone();
    kept.set_token(packet.get_token().to_vec());
    kept.payload.clone_from(&packet.payload);
    for (&number, values) in packet.options() {
        for (index, value) in values.iter().enumerate() {
            if violation(number, index, value).is_none() {
                kept.add_option(CoapOption::from(number), value.clone());
            }
        }
    }
    Ok(kept)
}

/// Encodes a message, refusing what a recipient would have to reject: a version other than 1,
/// a token longer than 8 bytes (or a header whose token length disagrees with the token), a
/// reserved code class, a type that cannot carry the code (an empty NON, an ACK carrying a
/// request, an RST that is not empty), an empty message with a token, options or payload, a
/// known option with a value of the wrong length or repeated though not repeatable, and
/// anything beyond [`MAX_DATAGRAM_LEN`]. Unknown options are sent as given. Never panics.
pub fn encode(packet: &Packet) -> Result<Vec<u8>, EncodeError> {
    let header = &packet.header;
    let version = header.get_version();
    if version != VERSION {
        return Err(EncodeError::Version { version });
    }
    let token = packet.get_token();
    let field = header.get_token_length();
    if token.len() > MAX_TOKEN_LEN || usize::from(field) != token.len() {
        return Err(EncodeError::TokenLength {
            len: token.len(),
            field,
        });
    }
    let code = u8::from(header.code);
    if matches!(code >> 5, 1 | 6 | 7) {
        return Err(EncodeError::ReservedCode { code });
    }
    let type_bits = match header.get_type() {
        MessageType::Confirmable => 0,
        MessageType::NonConfirmable => 1,
        MessageType::Acknowledgement => 2,
        MessageType::Reset => 3,
    };
    if !type_fits_code(type_bits, code) {
        return Err(EncodeError::TypeAndCode {
            message_type: type_bits,
            code,
        });
    }
    let has_options = packet.options().any(|(_, values)| !values.is_empty());
    if code == 0 && (!token.is_empty() || has_options || !packet.payload.is_empty()) {
        return Err(EncodeError::EmptyWithData);
    }
    let mut least = HEADER_LEN + token.len();
    for (&number, values) in packet.options() {
        let rule = option_rule(number);
        for (index, value) in values.iter().enumerate() {
            least = least.saturating_add(1 + value.len());
            if let Some(rule) = rule
                && ((index > 0 && !rule.repeatable)
                    || !(rule.min..=rule.max).contains(&value.len()))
            {
                return Err(EncodeError::OptionValue {
                    number,
                    len: value.len(),
                    min: rule.min,
                    max: rule.max,
                    repeatable: rule.repeatable,
                });
            }
        }
    }
    if !packet.payload.is_empty() {
        least = least.saturating_add(1 + packet.payload.len());
    }
    if least > MAX_DATAGRAM_LEN {
        return Err(EncodeError::TooLong {
            len: least,
            max: MAX_DATAGRAM_LEN,
        });
    }
    let bytes = packet
        .to_bytes_unlimited()
        .map_err(|e| EncodeError::Library(e.to_string()))?;
    if bytes.len() > MAX_DATAGRAM_LEN {
        return Err(EncodeError::TooLong {
            len: bytes.len(),
            max: MAX_DATAGRAM_LEN,
        });
    }
    Ok(bytes)
}

/// The 4 bytes of an empty ACK for a message id (RFC 7252 §4.2).
#[must_use]
pub const fn empty_ack_bytes(message_id: u16) -> [u8; 4] {
    let [m0, m1] = message_id.to_be_bytes();
    [0x60, 0x00, m0, m1]
}

/// The 4 bytes of an RST for a message id (RFC 7252 §4.2, §4.3).
#[must_use]
pub const fn reset_bytes(message_id: u16) -> [u8; 4] {
    let [m0, m1] = message_id.to_be_bytes();
    [0x70, 0x00, m0, m1]
}

fn empty(message_type: MessageType, message_id: u16) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(message_type);
    packet.header.code = MessageClass::Empty;
    packet.header.message_id = message_id;
    packet
}

/// An empty ACK for a message id: accepts a confirmable message whose response comes later
/// (RFC 7252 §5.2.2), or a notification.
#[must_use]
pub fn empty_ack(message_id: u16) -> Packet {
    empty(MessageType::Acknowledgement, message_id)
}

/// An RST for a message id: rejects a message (RFC 7252 §4.2), answers a CoAP ping (§4.3),
/// cancels an observation (RFC 7641 §3.6).
#[must_use]
pub fn reset(message_id: u16) -> Packet {
    empty(MessageType::Reset, message_id)
}

/// A response piggybacked on the ACK of a request: type ACK, the given code, the request's
/// message id and token (RFC 7252 §5.2.1). Options and payload are the caller's.
#[must_use]
pub fn piggybacked(request: &Packet, code: ResponseType) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Acknowledgement);
    packet.header.code = MessageClass::Response(code);
    packet.header.message_id = request.header.message_id;
    packet.set_token(request.get_token().to_vec());
    packet
}

/// A request of the given type, method, message id and token (at most 8 bytes); options and
/// payload are the caller's.
pub fn request(
    message_type: MessageType,
    method: RequestType,
    message_id: u16,
    token: &[u8],
) -> Result<Packet, EncodeError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(EncodeError::TokenLength {
            len: token.len(),
            field: 0,
        });
    }
    let mut packet = Packet::new();
    packet.header.set_type(message_type);
    packet.header.code = MessageClass::Request(method);
    packet.header.message_id = message_id;
    packet.set_token(token.to_vec());
    Ok(packet)
}

/// Whether the message is a CoAP ping: an empty confirmable message, answered with RST
/// (RFC 7252 §4.3).
#[must_use]
pub fn is_ping(packet: &Packet) -> bool {
    packet.header.code == MessageClass::Empty
        && packet.header.get_type() == MessageType::Confirmable
}

/// Why an option's value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// A string option (Uri-Path, Uri-Query, Location-Path, ...) is not UTF-8.
    #[error("option {number} is not valid UTF-8")]
    NotUtf8 {
        /// The option number.
        number: u16,
    },
    /// An unsigned integer option is longer than its type allows.
    #[error("option {number} has {len} bytes; its unsigned integer holds at most {max}")]
    UintTooLong {
        /// The option number.
        number: u16,
        /// The value's length.
        len: usize,
        /// The longest allowed value.
        max: usize,
    },
}

/// Every value of a string option, in order; fails on the first value that is not UTF-8.
pub fn strings(packet: &Packet, option: CoapOption) -> Result<Vec<&str>, OptionError> {
    let Some(values) = packet.get_option(option) else {
        return Ok(Vec::new());
    };
    values
        .iter()
        .map(|value| {
            std::str::from_utf8(value).map_err(|_| OptionError::NotUtf8 {
                number: option.into(),
            })
        })
        .collect()
}

/// The Uri-Path segments (`/rd/5a3f` is `["rd", "5a3f"]`; no option is the root).
pub fn uri_path(packet: &Packet) -> Result<Vec<&str>, OptionError> {
    strings(packet, CoapOption::UriPath)
}

/// The Uri-Query parameters as sent (`ep=123`, `Q`); split them with [`split_query`].
pub fn uri_query(packet: &Packet) -> Result<Vec<&str>, OptionError> {
    strings(packet, CoapOption::UriQuery)
}

/// The Location-Path segments of a response.
pub fn location_path(packet: &Packet) -> Result<Vec<&str>, OptionError> {
    strings(packet, CoapOption::LocationPath)
}

/// Splits a Uri-Query parameter at its first `=`: `lt=300` is `("lt", Some("300"))`, `Q` is
/// `("Q", None)`, `b=` is `("b", Some(""))`.
#[must_use]
pub fn split_query(param: &str) -> (&str, Option<&str>) {
    match param.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (param, None),
    }
}

fn read_uint(value: &[u8], number: u16, max: usize) -> Result<u32, OptionError> {
    if value.len() > max.min(4) {
        return Err(OptionError::UintTooLong {
            number,
            len: value.len(),
            max: max.min(4),
        });
    }
    Ok(value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
}

/// The first value of an unsigned integer option (at most 4 bytes, leading zeros accepted as
/// RFC 7252 §3.2 requires).
pub fn uint(packet: &Packet, option: CoapOption) -> Result<Option<u32>, OptionError> {
    packet
        .get_first_option(option)
        .map(|value| read_uint(value, option.into(), 4))
        .transpose()
}

/// The minimal encoding of an unsigned integer option value (RFC 7252 §3.2): 0 is empty.
#[must_use]
pub fn uint_bytes(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    bytes[skip..].to_vec()
}

/// Replaces every value of an option with one value.
pub fn set_option(packet: &mut Packet, option: CoapOption, value: Vec<u8>) {
    packet.set_option(option, LinkedList::from([value]));
}

/// Replaces an option with one unsigned integer value.
pub fn set_uint(packet: &mut Packet, option: CoapOption, value: u32) {
    set_option(packet, option, uint_bytes(value));
}

/// Replaces a string option with the given values, one option per value.
pub fn set_strings(packet: &mut Packet, option: CoapOption, values: &[&str]) {
    packet.set_option(
        option,
        values.iter().map(|v| v.as_bytes().to_vec()).collect(),
    );
}

/// The Content-Format (at most 2 bytes), if present.
pub fn content_format(packet: &Packet) -> Result<Option<u16>, OptionError> {
    packet
        .get_first_option(CoapOption::ContentFormat)
        .map(|value| read_uint(value, 12, 2).map(|v| u16::try_from(v).unwrap_or(u16::MAX)))
        .transpose()
}

/// Sets the Content-Format, replacing any previous value.
pub fn set_content_format(packet: &mut Packet, format: u16) {
    set_uint(packet, CoapOption::ContentFormat, u32::from(format));
}

/// The Max-Age in seconds, if present ([`DEFAULT_MAX_AGE_SECS`] applies otherwise).
pub fn max_age(packet: &Packet) -> Result<Option<u32>, OptionError> {
    uint(packet, CoapOption::MaxAge)
}

/// Sets Max-Age, e.g. on 4.29 and 5.03 to tell the device when to come back.
pub fn set_max_age(packet: &mut Packet, secs: u32) {
    set_uint(packet, CoapOption::MaxAge, secs);
}

/// Sets the Uri-Path of a request, one segment per option (`["19", "0", "0"]`).
pub fn set_uri_path(packet: &mut Packet, segments: &[&str]) {
    set_strings(packet, CoapOption::UriPath, segments);
}

/// Sets the Uri-Query of a request, one parameter per option.
pub fn set_uri_query(packet: &mut Packet, params: &[&str]) {
    set_strings(packet, CoapOption::UriQuery, params);
}

/// Sets the Location-Path of a 2.01 Created, one segment per option (`["rd", location]`).
pub fn set_location_path(packet: &mut Packet, segments: &[&str]) {
    set_strings(packet, CoapOption::LocationPath, segments);
}
