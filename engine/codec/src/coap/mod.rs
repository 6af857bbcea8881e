//! CoAP (RFC 7252) and the LwM2M registration interface, as fleetgate serves them to NB-IoT
//! devices (`docs/coap.md`).
//!
//! Everything here is sans-I/O: datagrams in, datagrams out, and the caller's clock and random
//! numbers passed in as arguments. The engine's CoAP server owns the sockets, the timers and the
//! registrations; this module holds the parts that can be tested on byte literals:
//!
//! - [`message`]: strict datagram decoding on top of coap-lite's [`Packet`] (with the
//!   [`DecodeError::reset`](message::DecodeError::reset) answer to send back), encoding, and the
//!   option readers and answer builders a server needs;
//! - [`link`]: the CoRE Link Format (RFC 6690) of register bodies, and the LwM2M object
//!   instances they list;
//! - [`lwm2m`]: the query parameters of LwM2M Register and Update;
//! - [`block`]: block-wise transfer (RFC 7959), its option values, a Block1 assembler and
//!   slicing for sending;
//! - [`observe`]: the Observe option (RFC 7641) and its freshness rule;
//! - [`reliability`]: retransmission of confirmable messages, deduplication, message ids and
//!   tokens (RFC 7252 §4).
//!
//! coap-lite's message types are re-exported so that the engine uses exactly the version this
//! module decodes into.
//!
//! ```
//! use fleetgate_codec::coap::{message, MessageType, ResponseType};
//!
//! // A confirmable GET /.well-known/core, message id 0x1234, token 0x01.
//! let datagram = [
//!     0x41, 0x01, 0x12, 0x34, 0x01, 0xBB, b'.', b'w', b'e', b'l', b'l', b'-', b'k', b'n',
//!     b'o', b'w', b'n', 0x04, b'c', b'o', b'r', b'e',
//! ];
//! let request = message::decode(&datagram)?;
//! assert_eq!(message::uri_path(&request)?, [".well-known", "core"]);
//!
//! let mut answer = message::piggybacked(&request, ResponseType::Content);
//! message::set_content_format(&mut answer, message::content_format::LINK_FORMAT);
//! answer.payload = br#"</rd>;rt="core.rd""#.to_vec();
//! let bytes = message::encode(&answer)?;
//! assert_eq!(bytes[..5], [0x61, 0x45, 0x12, 0x34, 0x01]);
//! assert_eq!(answer.header.get_type(), MessageType::Acknowledgement);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod block;
pub mod link;
pub mod lwm2m;
pub mod message;
pub mod observe;
pub mod reliability;

pub use coap_lite::{
    CoapOption, Header, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
