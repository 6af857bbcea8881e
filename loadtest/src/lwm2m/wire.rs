//! CoAP message building and reading for the simulator: the LwM2M registration requests,
//! notifications and answers of docs/coap.md, response codes, and RFC 7252's transmission
//! parameters.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

/// Content format `application/link-format`.
pub(super) const CF_LINK_FORMAT: u16 = 40;
/// Content format `application/octet-stream`.
pub(super) const CF_OCTET_STREAM: u16 = 42;
/// The objects a simulated device registers (docs/coap.md: object 19 carries the data).
pub(super) const LINKS: &str = r#"</>;rt="oma.lwm2m",</1/0>,</3/0>,</19/0>,</19/1>"#;
/// RFC 7252 `EXCHANGE_LIFETIME` with the default parameters: how long a CON's message id is
/// remembered for deduplication.
pub(super) const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// Largest observe sequence number + 1 (the option is 24 bits).
pub(super) const OBSERVE_MODULUS: u32 = 1 << 24;

/// A CoAP code (`class.detail`, RFC 7252 §3): request methods, response codes, 0.00 empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u8);

impl Code {
    /// 0.00, an empty message.
    pub const EMPTY: Code = Code(0x00);
    /// 0.01 GET.
    pub const GET: Code = Code(0x01);
    /// 0.02 POST.
    pub const POST: Code = Code(0x02);
    /// 0.04 DELETE.
    pub const DELETE: Code = Code(0x04);
    /// 2.01 Created.
    pub const CREATED: Code = Code(0x41);
    /// 2.02 Deleted.
    pub const DELETED: Code = Code(0x42);
    /// 2.04 Changed.
    pub const CHANGED: Code = Code(0x44);
    /// 2.05 Content.
    pub const CONTENT: Code = Code(0x45);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Code = Code(0x80);
    /// 4.03 Forbidden.
    pub const FORBIDDEN: Code = Code(0x83);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Code = Code(0x84);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Code = Code(0x85);
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code(0x8D);
    /// 4.29 Too Many Requests.
    pub const TOO_MANY_REQUESTS: Code = Code(0x9D);
    /// 5.00 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: Code = Code(0xA0);
    /// 5.03 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: Code = Code(0xA3);

    /// The code `class.detail` (class 0–7, detail 0–31).
    pub const fn new(class: u8, detail: u8) -> Code {
        Code((class << 5) | (detail & 0x1F))
    }

    /// The class (0 request, 2 success, 4 client error, 5 server error).
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail.
    pub const fn detail(self) -> u8 {
        self.0 & 0x1F
    }

    /// A 2.xx response code.
    pub const fn is_success(self) -> bool {
        self.class() == 2
    }

    /// A 4.xx or 5.xx response code.
    pub const fn is_error(self) -> bool {
        matches!(self.class(), 4 | 5)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl From<MessageClass> for Code {
    fn from(c: MessageClass) -> Code {
        Code(u8::from(c))
    }
}

impl From<Code> for MessageClass {
    fn from(c: Code) -> MessageClass {
        MessageClass::from(c.0)
    }
}

/// The LwM2M version a device registers with (`lwm2m=` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lwm2mVersion {
    /// 1.0: queue mode is the binding `UQ`.
    V1_0,
    /// 1.1: queue mode is the separate `Q` parameter.
    #[default]
    V1_1,
    /// 1.2: as 1.1.
    V1_2,
}

impl Lwm2mVersion {
    /// The query value (`1.0`, `1.1`, `1.2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Lwm2mVersion::V1_0 => "1.0",
            Lwm2mVersion::V1_1 => "1.1",
            Lwm2mVersion::V1_2 => "1.2",
        }
    }
}

/// RFC 7252 §4.8 transmission parameters for the simulator's own confirmable messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transmission {
    /// `ACK_TIMEOUT` (RFC: 2 s).
    pub ack_timeout: Duration,
    /// `ACK_RANDOM_FACTOR` (RFC: 1.5): the first timeout is random in
    /// `[ack_timeout, ack_timeout * factor]`, then it doubles.
    pub ack_random_factor: f64,
    /// `MAX_RETRANSMIT` (RFC: 4).
    pub max_retransmit: u32,
}

impl Default for Transmission {
    /// RFC 7252's defaults: 2 s, 1.5, 4 retransmissions.
    fn default() -> Self {
        Transmission {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
        }
    }
}

impl Transmission {
    /// Short timeouts for tests on loopback: 100 ms, 1.5, 4 retransmissions (gives up after
    /// at most 4.65 s).
    pub fn fast() -> Self {
        Transmission {
            ack_timeout: Duration::from_millis(100),
            ack_random_factor: 1.5,
            max_retransmit: 4,
        }
    }

    /// The first timeout, drawn in `[ack_timeout, ack_timeout * factor]`.
    pub(super) fn initial_timeout(&self, rng: &mut Rng) -> Duration {
        let spread = (self.ack_random_factor - 1.0).max(0.0);
        self.ack_timeout.mul_f64(1.0 + spread * rng.unit())
    }

    /// RFC 7252 `MAX_TRANSMIT_WAIT` with these parameters: the longest a CON waits for its
    /// ACK.
    pub fn max_transmit_wait(&self) -> Duration {
        let n = 2f64.powi(self.max_retransmit as i32 + 1) - 1.0;
        self.ack_timeout
            .mul_f64(n * self.ack_random_factor.max(1.0))
    }
}

/// A small xorshift64* generator for message ids, tokens and retransmission jitter (no
/// cryptographic use).
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    /// Seeded from the clock and a process-wide counter, so that devices differ.
    pub(super) fn seeded() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let c = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Rng((t ^ c.rotate_left(17)) | 1)
    }

    /// The next 64 random bits.
    pub(super) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A request or response of the given type, code, message id and token.
pub(super) fn packet(kind: MessageType, code: Code, mid: u16, token: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(kind);
    p.header.code = code.into();
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    p
}

/// Appends each `/`-separated segment of `path` as an option (Uri-Path, Location-Path).
fn add_path(p: &mut Packet, option: CoapOption, path: &str) {
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(option, seg.as_bytes().to_vec());
    }
}

/// The content format option.
pub(super) fn set_content_format(p: &mut Packet, cf: u16) {
    p.add_option(CoapOption::ContentFormat, uint_option(u32::from(cf)));
}

/// A CoAP uint option value: big-endian, no leading zero bytes (0 is empty).
pub(super) fn uint_option(v: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count();
    b[skip..].to_vec()
}

/// Reads a uint option value (at most 4 bytes).
pub(super) fn read_uint(v: &[u8]) -> Option<u32> {
    if v.len() > 4 {
        return None;
    }
    Some(v.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)))
}

/// The first value of a uint option.
pub(super) fn uint_of(p: &Packet, option: CoapOption) -> Option<u32> {
    p.get_first_option(option).and_then(|v| read_uint(v))
}

/// The request's Uri-Path, segments joined by `/` (no leading slash).
pub(super) fn uri_path(p: &Packet) -> String {
    joined(p, CoapOption::UriPath)
}

/// The response's Location-Path, segments joined by `/` (`rd/abc`).
pub(super) fn location_path(p: &Packet) -> String {
    joined(p, CoapOption::LocationPath)
}

fn joined(p: &Packet, option: CoapOption) -> String {
    p.get_option(option)
        .map(|l| {
            l.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

/// `POST /rd?ep=…&lt=…&lwm2m=…&b=…[&Q]` with the link-format body.
pub(super) fn register_request(
    mid: u16,
    token: &[u8],
    endpoint: &str,
    lifetime: u32,
    version: Lwm2mVersion,
    queue_mode: bool,
) -> Packet {
    let mut p = packet(MessageType::Confirmable, Code::POST, mid, token);
    p.add_option(CoapOption::UriPath, b"rd".to_vec());
    set_content_format(&mut p, CF_LINK_FORMAT);
    let mut query = vec![
        format!("ep={endpoint}"),
        format!("lt={lifetime}"),
        format!("lwm2m={}", version.as_str()),
    ];
    match (version, queue_mode) {
        (Lwm2mVersion::V1_0, true) => query.push("b=UQ".into()),
        (_, true) => {
            query.push("b=U".into());
            query.push("Q".into());
        }
        (_, false) => query.push("b=U".into()),
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.into_bytes());
    }
    p.payload = LINKS.as_bytes().to_vec();
    p
}

/// `POST /{location}[?lt=…]` (registration update, no body).
pub(super) fn update_request(
    mid: u16,
    token: &[u8],
    location: &str,
    lifetime: Option<u32>,
) -> Packet {
    let mut p = packet(MessageType::Confirmable, Code::POST, mid, token);
    add_path(&mut p, CoapOption::UriPath, location);
    if let Some(lt) = lifetime {
        p.add_option(CoapOption::UriQuery, format!("lt={lt}").into_bytes());
    }
    p
}

/// `DELETE /{location}` (de-register).
pub(super) fn deregister_request(mid: u16, token: &[u8], location: &str) -> Packet {
    let mut p = packet(MessageType::Confirmable, Code::DELETE, mid, token);
    add_path(&mut p, CoapOption::UriPath, location);
    p
}

/// A 2.05 notification on the observe `token` with sequence number `seq` carrying `report`.
pub(super) fn notification(
    mid: u16,
    token: &[u8],
    seq: u32,
    report: &[u8],
    confirmable: bool,
) -> Packet {
    let kind = if confirmable {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    };
    let mut p = packet(kind, Code::CONTENT, mid, token);
    p.add_option(CoapOption::Observe, uint_option(seq));
    set_content_format(&mut p, CF_OCTET_STREAM);
    p.payload = report.to_vec();
    p
}

/// A piggybacked answer (ACK with the request's message id and token) to `request`.
pub(super) fn piggybacked(request: &Packet, code: Code, payload: &[u8]) -> Packet {
    let mut p = packet(
        MessageType::Acknowledgement,
        code,
        request.header.message_id,
        request.get_token(),
    );
    p.payload = payload.to_vec();
    p
}

/// An empty ACK or RST for message id `mid`.
pub(super) fn empty(kind: MessageType, mid: u16) -> Vec<u8> {
    let t = match kind {
        MessageType::Confirmable => 0u8,
        MessageType::NonConfirmable => 1,
        MessageType::Acknowledgement => 2,
        MessageType::Reset => 3,
    };
    let m = mid.to_be_bytes();
    vec![0x40 | (t << 4), 0, m[0], m[1]]
}

/// The datagram of `p` (messages here are small: no size limit applied).
pub(super) fn bytes(p: &Packet) -> Vec<u8> {
    // A packet built here always encodes; an error would be an option over 65 kB.
    p.to_bytes_unlimited().unwrap_or_default()
}

/// Whether `p` is `GET /19/0/0` (the report resource).
pub(super) fn is_report_resource(path: &str) -> bool {
    path == "19/0/0"
}

/// Whether `p` is the command resource `19/1/0`.
pub(super) fn is_command_resource(path: &str) -> bool {
    path == "19/1/0"
}

/// The diagnostic payload of an error response, as text.
pub(super) fn diagnostic(p: &Packet) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}
