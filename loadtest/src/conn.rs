//! An active MQTT 3.1.1 connection for the scenarios that publish and subscribe (`telemetry`,
//! `command-roundtrip`): the packets they send beyond [`crate::mqtt`] (PUBLISH, PUBACK,
//! SUBSCRIBE, CONNECT without credentials), a framer that cuts the server's byte stream into
//! whole packets, and the connect handshake over tokio from a chosen 127.0.0.x source address.
//! Written from the OASIS standard, independently of fleetgate's codec.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::credentials::MqttCredentials;
use crate::mqtt::{CONNACK_LEN, ConnAck, Connect};

fn put_u16_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s[..usize::from(len)]);
}

fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A PUBLISH (MQTT 3.1.1 §3.3); `packet_id` is used at QoS 1 only.
pub fn publish(topic: &str, payload: &[u8], qos: u8, packet_id: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    put_u16_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos.min(1) << 1), &body)
}

/// A PUBACK (MQTT 3.1.1 §3.4).
pub fn puback(packet_id: u16) -> [u8; 4] {
    let [a, b] = packet_id.to_be_bytes();
    [0x40, 0x02, a, b]
}

/// A SUBSCRIBE of one filter (MQTT 3.1.1 §3.8).
pub fn subscribe(packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = Vec::with_capacity(filter.len() + 5);
    body.extend_from_slice(&packet_id.to_be_bytes());
    put_u16_str(&mut body, filter.as_bytes());
    body.push(qos.min(1));
    packet(0x82, &body)
}

/// A packet from the server, as far as the scenarios care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// PUBLISH: topic, QoS, packet id (0 at QoS 0), payload.
    Publish {
        /// Topic name.
        topic: String,
        /// QoS 0, 1 or 2.
        qos: u8,
        /// Packet id (0 at QoS 0).
        packet_id: u16,
        /// Payload.
        payload: Vec<u8>,
    },
    /// PUBACK of a packet id.
    PubAck(u16),
    /// SUBACK: packet id and return codes (0x80 = refused).
    SubAck(u16, Vec<u8>),
    /// Any other packet type (PINGRESP, …), by type.
    Other(u8),
}

/// Why the stream is not MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Cuts a byte stream into packets, buffering only an incomplete one.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole packet, if one has arrived.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, Malformed> {
        let Some((len, header)) = self.frame_len()? else {
            return Ok(None);
        };
        if self.buf.len() < header + len {
            return Ok(None);
        }
        let first = self.buf[0];
        let body = &self.buf[header..header + len];
        let p = decode(first, body)?;
        self.buf.drain(..header + len);
        Ok(Some(p))
    }

    fn frame_len(&self) -> Result<Option<(usize, usize)>, Malformed> {
        let mut value = 0usize;
        for i in 0..4 {
            let Some(&b) = self.buf.get(1 + i) else {
                return Ok(None);
            };
            value |= usize::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(Some((value, 2 + i)));
            }
        }
        Err(Malformed("remaining length longer than four bytes".into()))
    }
}

fn decode(first: u8, body: &[u8]) -> Result<Packet, Malformed> {
    let short = || Malformed(format!("packet 0x{first:02x} too short"));
    let u16_at = |i: usize| -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes([
            *body.get(i).ok_or_else(short)?,
            *body.get(i + 1).ok_or_else(short)?,
        ]))
    };
    match first >> 4 {
        3 => {
            let qos = (first >> 1) & 3;
            let tlen = usize::from(u16_at(0)?);
            let topic = body.get(2..2 + tlen).ok_or_else(short)?;
            let topic = String::from_utf8(topic.to_vec())
                .map_err(|_| Malformed("topic is not UTF-8".into()))?;
            let (packet_id, rest) = if qos > 0 {
                (u16_at(2 + tlen)?, 4 + tlen)
            } else {
                (0, 2 + tlen)
            };
            Ok(Packet::Publish {
                topic,
                qos,
                packet_id,
                payload: body.get(rest..).ok_or_else(short)?.to_vec(),
            })
        }
        4 => Ok(Packet::PubAck(u16_at(0)?)),
        9 => Ok(Packet::SubAck(u16_at(0)?, body[2..].to_vec())),
        kind => Ok(Packet::Other(kind)),
    }
}

/// Connects from `source` to `target`, sends CONNECT and waits for CONNACK 0, all within
/// `timeout`. Errors are short labels suitable for counting (`connack 4`, `connect:
/// ConnectionRefused`, `timeout`).
pub async fn connect(
    source: Ipv4Addr,
    target: SocketAddr,
    login: &MqttCredentials,
    keepalive_secs: u16,
    timeout: Duration,
) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, handshake(source, target, login, keepalive_secs)).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

async fn handshake(
    source: Ipv4Addr,
    target: SocketAddr,
    login: &MqttCredentials,
    keepalive_secs: u16,
) -> Result<TcpStream, String> {
    let label = |stage: &str, e: std::io::Error| format!("{stage}: {:?}", e.kind());
    let socket = TcpSocket::new_v4().map_err(|e| label("socket", e))?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|e| label("bind", e))?;
    let mut stream = socket
        .connect(target)
        .await
        .map_err(|e| label("connect", e))?;
    stream.set_nodelay(true).map_err(|e| label("nodelay", e))?;
    let packet = Connect {
        client_id: &login.client_id,
        username: &login.username,
        password: &login.password,
        keepalive_secs,
    }
    .encode();
    stream
        .write_all(&packet)
        .await
        .map_err(|e| label("send", e))?;
    let mut ack = [0u8; CONNACK_LEN];
    stream
        .read_exact(&mut ack)
        .await
        .map_err(|e| label("connack", e))?;
    match ConnAck::decode(ack) {
        Ok(ConnAck::Accepted { .. }) => Ok(stream),
        Ok(ConnAck::Refused(code)) => Err(format!("connack {code}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Microseconds since the Unix epoch (the send timestamp carried in payloads).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_framer_round_trip() {
        let mut f = Framer::default();
        let p1 = publish("a/b", b"hello", 1, 7);
        assert_eq!(&p1[..2], &[0x32, 2 + 3 + 2 + 5]);
        let p0 = publish("t", &[0u8; 200], 0, 0);
        let mut stream = p1.clone();
        stream.extend_from_slice(&p0);
        stream.extend_from_slice(&puback(300));
        stream.extend_from_slice(&[0x90, 0x03, 0x00, 0x01, 0x80]);
        stream.extend_from_slice(&[0xD0, 0x00]);
        for chunk in [1usize, 3, 1000] {
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                f.feed(piece);
                while let Some(p) = f.next_packet().unwrap() {
                    got.push(p);
                }
            }
            assert_eq!(got.len(), 5, "chunk {chunk}");
            assert_eq!(
                got[0],
                Packet::Publish {
                    topic: "a/b".into(),
                    qos: 1,
                    packet_id: 7,
                    payload: b"hello".to_vec()
                }
            );
            assert!(
                matches!(&got[1], Packet::Publish { qos: 0, payload, .. } if payload.len() == 200)
            );
            assert_eq!(got[2], Packet::PubAck(300));
            assert_eq!(got[3], Packet::SubAck(1, vec![0x80]));
            assert_eq!(got[4], Packet::Other(13));
        }
    }

    #[test]
    fn subscribe_and_anonymous_connect_bytes() {
        assert_eq!(
            subscribe(1, "a/#", 1),
            vec![0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1]
        );
        assert_eq!(
            Connect {
                client_id: "c",
                username: "",
                password: "",
                keepalive_secs: 60,
            }
            .encode(),
            vec![
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c'
            ]
        );
    }

    #[test]
    fn overlong_lengths_are_malformed() {
        let mut f = Framer::default();
        f.feed(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        assert!(f.next_packet().is_err());
    }
}
