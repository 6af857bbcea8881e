//! The simulator against scripted CoAP peers built here with coap-lite on loopback sockets:
//! a step-by-step server for [`SimDevice`], and a small LwM2M server thread for [`Fleet`].

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};

use super::wire::{self, CF_LINK_FORMAT, CF_OCTET_STREAM, LINKS};
use super::*;

/// A scripted server: receives and sends single messages on a loopback socket.
struct Peer {
    sock: UdpSocket,
    mid: u16,
}

impl Peer {
    fn new() -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        Peer { sock, mid: 1000 }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn try_recv(&self, timeout: Duration) -> Option<(Packet, SocketAddr, Vec<u8>)> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 2048];
        loop {
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    return Some((
                        Packet::from_bytes(&buf[..n]).unwrap(),
                        from,
                        buf[..n].to_vec(),
                    ));
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return None;
                }
                // An ICMP port unreachable from an earlier send to a closed port.
                Err(_) => continue,
            }
        }
    }

    fn recv(&self) -> (Packet, SocketAddr) {
        let (p, from, _) = self.try_recv(Duration::from_secs(5)).expect("a datagram");
        (p, from)
    }

    fn send(&self, p: &Packet, to: SocketAddr) {
        self.sock.send_to(&p.to_bytes().unwrap(), to).unwrap();
    }

    fn next_mid(&mut self) -> u16 {
        self.mid = self.mid.wrapping_add(1);
        self.mid
    }

    /// A CON request to the device.
    fn request(&mut self, code: Code, path: &str, token: &[u8], payload: &[u8]) -> Packet {
        let mid = self.next_mid();
        let mut p = wire::packet(MessageType::Confirmable, code, mid, token);
        for seg in path.split('/') {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        if !payload.is_empty() {
            wire::set_content_format(&mut p, CF_OCTET_STREAM);
            p.payload = payload.to_vec();
        }
        p
    }

    fn observe_get(&mut self, token: &[u8]) -> Packet {
        let mut p = self.request(Code::GET, "19/0/0", token, &[]);
        p.add_option(CoapOption::Observe, Vec::new());
        p
    }

    /// Answers `req` piggybacked.
    fn answer(&self, req: &Packet, code: Code, location: Option<&str>, to: SocketAddr) {
        let mut p = wire::piggybacked(req, code, &[]);
        if let Some(loc) = location {
            for seg in loc.split('/') {
                p.add_option(CoapOption::LocationPath, seg.as_bytes().to_vec());
            }
        }
        self.send(&p, to);
    }

    fn ack(&self, mid: u16, to: SocketAddr) {
        self.sock
            .send_to(&wire::empty(MessageType::Acknowledgement, mid), to)
            .unwrap();
    }
}

fn queries(p: &Packet) -> Vec<String> {
    p.get_option(CoapOption::UriQuery)
        .map(|l| {
            l.iter()
                .map(|q| String::from_utf8(q.clone()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn code(p: &Packet) -> Code {
    Code::from(p.header.code)
}

const EP: &str = "860000000000001";

/// Registers a device against `peer` (answering 2.01 `rd/a1b2`); returns it and its address.
fn registered(peer: &Peer, opts: DeviceOptions) -> (SimDevice, SocketAddr) {
    let server = peer.addr();
    thread::scope(|s| {
        let h = s.spawn(move || SimDevice::register(server, EP, opts));
        let (req, from) = peer.recv();
        peer.answer(&req, Code::CREATED, Some("rd/a1b2"), from);
        (h.join().unwrap().unwrap(), from)
    })
}

/// Observes `/19/0/0` with `token`; returns the ACK.
fn observe(peer: &mut Peer, token: &[u8], to: SocketAddr) -> Packet {
    let get = peer.observe_get(token);
    peer.send(&get, to);
    let (ack, _) = peer.recv();
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, get.header.message_id);
    ack
}

#[test]
fn registers_with_the_contract_request_and_remembers_the_location() {
    let peer = Peer::new();
    let server = peer.addr();
    thread::scope(|s| {
        let h = s.spawn(|| SimDevice::register(server, EP, DeviceOptions::fast()));
        let (req, from) = peer.recv();
        assert_eq!(req.header.get_type(), MessageType::Confirmable);
        assert_eq!(code(&req), Code::POST);
        assert_eq!(wire::uri_path(&req), "rd");
        assert_eq!(
            queries(&req),
            [&format!("ep={EP}"), "lt=86400", "lwm2m=1.1", "b=U", "Q"]
        );
        assert_eq!(wire::uint_of(&req, CoapOption::ContentFormat), Some(40));
        assert_eq!(req.payload, LINKS.as_bytes());
        assert_eq!(LINKS, r#"</>;rt="oma.lwm2m",</1/0>,</3/0>,</19/0>,</19/1>"#);
        assert!(!req.get_token().is_empty());
        peer.answer(&req, Code::CREATED, Some("rd/a1b2"), from);
        let dev = h.join().unwrap().unwrap();
        assert_eq!(dev.location().as_deref(), Some("rd/a1b2"));
        assert_eq!(dev.local_addr(), from);
        assert_eq!(dev.endpoint(), EP);
    });
}

#[test]
fn lwm2m_1_0_queue_mode_is_the_uq_binding() {
    let peer = Peer::new();
    let server = peer.addr();
    let opts = DeviceOptions {
        version: Lwm2mVersion::V1_0,
        lifetime: 300,
        ..DeviceOptions::fast()
    };
    thread::scope(|s| {
        let h = s.spawn(|| SimDevice::register(server, EP, opts));
        let (req, from) = peer.recv();
        assert_eq!(
            queries(&req),
            [&format!("ep={EP}"), "lt=300", "lwm2m=1.0", "b=UQ"]
        );
        assert_eq!(
            wire::uint_of(&req, CoapOption::ContentFormat),
            Some(u32::from(CF_LINK_FORMAT))
        );
        peer.answer(&req, Code::CREATED, Some("rd/x"), from);
        h.join().unwrap().unwrap();
    });
}

#[test]
fn a_refused_registration_surfaces_code_and_diagnostic() {
    let peer = Peer::new();
    let server = peer.addr();
    thread::scope(|s| {
        let h = s.spawn(|| SimDevice::register(server, EP, DeviceOptions::fast()));
        let (req, from) = peer.recv();
        let mut resp = wire::piggybacked(&req, Code::FORBIDDEN, b"unknown endpoint");
        resp.add_option(CoapOption::MaxAge, vec![30]);
        peer.send(&resp, from);
        match h.join().unwrap() {
            Err(SimError::Refused {
                code,
                diagnostic,
                max_age,
            }) => {
                assert_eq!(code, Code::FORBIDDEN);
                assert_eq!(code.to_string(), "4.03");
                assert_eq!(diagnostic, "unknown endpoint");
                assert_eq!(max_age, Some(30));
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn retransmits_the_same_message_until_answered() {
    let peer = Peer::new();
    let server = peer.addr();
    thread::scope(|s| {
        let h = s.spawn(|| SimDevice::register(server, EP, DeviceOptions::fast()));
        let t0 = Instant::now();
        let (_, from, first) = peer.try_recv(Duration::from_secs(5)).unwrap();
        let (_, _, second) = peer.try_recv(Duration::from_secs(5)).unwrap();
        let t1 = t0.elapsed();
        let (req, _, third) = peer.try_recv(Duration::from_secs(5)).unwrap();
        let t2 = t0.elapsed();
        // Same datagram (same message id and token) each time.
        assert_eq!(first, second);
        assert_eq!(first, third);
        // 100–150 ms, then twice that.
        assert!(t1 >= Duration::from_millis(90), "{t1:?}");
        assert!(t2 >= t1 + Duration::from_millis(180), "{t1:?} {t2:?}");
        peer.answer(&req, Code::CREATED, Some("rd/r"), from);
        let dev = h.join().unwrap().unwrap();
        assert_eq!(dev.stats().retransmissions, 2);
    });
}

#[test]
fn gives_up_after_max_retransmit() {
    let peer = Peer::new();
    let opts = DeviceOptions {
        transmission: Transmission {
            ack_timeout: Duration::from_millis(20),
            ack_random_factor: 1.5,
            max_retransmit: 4,
        },
        ..DeviceOptions::fast()
    };
    let t0 = Instant::now();
    match SimDevice::register(peer.addr(), EP, opts) {
        Err(SimError::Timeout { attempts }) => assert_eq!(attempts, 5),
        other => panic!("{other:?}"),
    }
    // 20 ms × (1 + 2 + 4 + 8 + 16) at least.
    assert!(t0.elapsed() >= Duration::from_millis(620));
    let mut n = 0;
    while peer.try_recv(Duration::from_millis(50)).is_some() {
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn a_separate_register_response_is_acknowledged() {
    let peer = Peer::new();
    let server = peer.addr();
    thread::scope(|s| {
        let h = s.spawn(|| SimDevice::register(server, EP, DeviceOptions::fast()));
        let (req, from) = peer.recv();
        peer.ack(req.header.message_id, from);
        thread::sleep(Duration::from_millis(300));
        // Nothing retransmitted after the empty ACK.
        assert!(peer.try_recv(Duration::from_millis(10)).is_none());
        let mut resp = wire::packet(
            MessageType::Confirmable,
            Code::CREATED,
            4242,
            req.get_token(),
        );
        resp.add_option(CoapOption::LocationPath, b"rd".to_vec());
        resp.add_option(CoapOption::LocationPath, b"sep".to_vec());
        peer.send(&resp, from);
        let (ack, _) = peer.recv();
        assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(ack.header.message_id, 4242);
        assert_eq!(code(&ack), Code::EMPTY);
        let dev = h.join().unwrap().unwrap();
        assert_eq!(dev.location().as_deref(), Some("rd/sep"));
        // The retransmitted separate response is acknowledged again.
        peer.send(&resp, from);
        let (ack, _) = peer.recv();
        assert_eq!(ack.header.message_id, 4242);
        assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    });
}

#[test]
fn answers_observe_and_notifies_on_its_token() {
    let mut peer = Peer::new();
    let report = Report {
        battery: 87,
        signal: -93,
        reading: 123_456,
        valve_open: false,
    };
    let (dev, addr) = registered(
        &peer,
        DeviceOptions {
            report,
            ..DeviceOptions::fast()
        },
    );
    assert!(dev.observe_token().is_none());
    let token = [9u8, 8, 7, 6];
    let get = peer.observe_get(&token);
    peer.send(&get, addr);
    let (ack, _, ack_bytes) = peer.try_recv(Duration::from_secs(5)).unwrap();
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, get.header.message_id);
    assert_eq!(ack.get_token(), token);
    assert_eq!(code(&ack), Code::CONTENT);
    let seq0 = wire::uint_of(&ack, CoapOption::Observe).expect("Observe option");
    assert_eq!(wire::uint_of(&ack, CoapOption::ContentFormat), Some(42));
    assert_eq!(Report::decode(&ack.payload), Ok(report));
    assert_eq!(
        ack.payload,
        [0x01, 87, (-93i8) as u8, 0x00, 0x01, 0xE2, 0x40, 0x00]
    );
    assert!(dev.wait_observed(Duration::from_secs(1)));
    assert_eq!(dev.observe_token().as_deref(), Some(&token[..]));

    // A retransmitted GET gets the same answer, and is not processed again.
    peer.send(&get, addr);
    let (_, _, again) = peer.try_recv(Duration::from_secs(5)).unwrap();
    assert_eq!(again, ack_bytes);
    assert_eq!(dev.stats().duplicates, 1);
    assert_eq!(dev.stats().observe_requests, 1);

    // A confirmable notification, acknowledged.
    thread::scope(|s| {
        let h = s.spawn(|| {
            dev.notify(Report {
                reading: 123_500,
                ..report
            })
        });
        let (n, from) = peer.recv();
        assert_eq!(from, addr);
        assert_eq!(n.header.get_type(), MessageType::Confirmable);
        assert_eq!(code(&n), Code::CONTENT);
        assert_eq!(n.get_token(), token);
        let seq1 = wire::uint_of(&n, CoapOption::Observe).unwrap();
        assert!(seq1 > seq0);
        assert_eq!(Report::decode(&n.payload).unwrap().reading, 123_500);
        peer.ack(n.header.message_id, from);
        h.join().unwrap().unwrap();

        // A non-confirmable one, with the next sequence number.
        dev.notify_non(report).unwrap();
        let (n2, _) = peer.recv();
        assert_eq!(n2.header.get_type(), MessageType::NonConfirmable);
        assert_eq!(n2.get_token(), token);
        assert_eq!(wire::uint_of(&n2, CoapOption::Observe), Some(seq1 + 1));
        assert_ne!(n2.header.message_id, n.header.message_id);
    });
    assert_eq!(dev.stats().notifications, 2);
}

#[test]
fn a_reset_notification_cancels_the_observation() {
    let mut peer = Peer::new();
    let (dev, addr) = registered(&peer, DeviceOptions::fast());
    assert!(matches!(
        dev.notify(Report::default()),
        Err(SimError::NoObservation)
    ));
    observe(&mut peer, &[1, 2], addr);
    thread::scope(|s| {
        let h = s.spawn(|| dev.notify(Report::default()));
        let (n, from) = peer.recv();
        peer.sock
            .send_to(&wire::empty(MessageType::Reset, n.header.message_id), from)
            .unwrap();
        assert!(matches!(h.join().unwrap(), Err(SimError::Reset)));
    });
    assert!(dev.observe_token().is_none());
}

/// Sends `frame` as a command; returns the answer (if any within 300 ms).
fn command(peer: &mut Peer, frame: &[u8], to: SocketAddr) -> (Packet, Option<Packet>) {
    let token = peer.next_mid().to_be_bytes();
    let req = peer.request(Code::POST, "19/1/0", &token, frame);
    peer.send(&req, to);
    let answer = peer.try_recv(Duration::from_millis(300)).map(|(p, _, _)| p);
    (req, answer)
}

#[test]
fn answers_commands_as_configured_and_records_them() {
    let mut peer = Peer::new();
    let (dev, addr) = registered(&peer, DeviceOptions::fast());

    // Piggybacked success with the response frame.
    let valve = Command::SetValve { open: false }.encode();
    assert_eq!(valve, [0x81, 0x00]);
    let (req, ans) = command(&mut peer, &valve, addr);
    let first = req.clone();
    let ans = ans.unwrap();
    assert_eq!(ans.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ans.header.message_id, req.header.message_id);
    assert_eq!(ans.get_token(), req.get_token());
    assert_eq!(code(&ans), Code::CHANGED);
    assert_eq!(ans.payload, [0xA0, 0x00]);
    // Its retransmission: the same answer, not recorded twice.
    peer.send(&req, addr);
    let (again, _) = peer.recv();
    assert_eq!(again.payload, [0xA0, 0x00]);
    assert_eq!(again.header.message_id, req.header.message_id);

    dev.set_command_behaviour(CommandBehaviour::Piggybacked { result: 7 });
    let interval = Command::SetInterval { secs: 3600 }.encode();
    assert_eq!(interval, [0x82, 0, 0, 0x0E, 0x10]);
    let (_, ans) = command(&mut peer, &interval, addr);
    assert_eq!(ans.unwrap().payload, [0xA0, 7]);

    // An undecodable frame: 4.00, still recorded.
    let (_, ans) = command(&mut peer, &[0x82, 0, 0, 0, 1], addr);
    assert_eq!(code(&ans.unwrap()), Code::BAD_REQUEST);

    dev.set_command_behaviour(CommandBehaviour::NoPayload);
    let (_, ans) = command(&mut peer, &valve, addr);
    let ans = ans.unwrap();
    assert_eq!(code(&ans), Code::CHANGED);
    assert!(ans.payload.is_empty());

    dev.set_command_behaviour(CommandBehaviour::Error {
        code: Code::INTERNAL_SERVER_ERROR,
        diagnostic: "valve stuck".into(),
    });
    let (_, ans) = command(&mut peer, &valve, addr);
    let ans = ans.unwrap();
    assert_eq!(code(&ans), Code::INTERNAL_SERVER_ERROR);
    assert_eq!(ans.payload, b"valve stuck");

    dev.set_command_behaviour(CommandBehaviour::Reset);
    let (req, ans) = command(&mut peer, &valve, addr);
    let ans = ans.unwrap();
    assert_eq!(ans.header.get_type(), MessageType::Reset);
    assert_eq!(ans.header.message_id, req.header.message_id);

    dev.set_command_behaviour(CommandBehaviour::Ignore);
    let (req, ans) = command(&mut peer, &valve, addr);
    assert!(ans.is_none());
    // Ignored again when retransmitted, not recorded twice.
    peer.send(&req, addr);
    assert!(peer.try_recv(Duration::from_millis(200)).is_none());

    let cmds = dev.wait_for_commands(7, Duration::from_secs(1)).unwrap();
    assert_eq!(cmds.len(), 7);
    let decoded: Vec<_> = cmds.iter().map(|c| c.command).collect();
    assert_eq!(
        decoded,
        [
            Ok(Command::SetValve { open: false }),
            Ok(Command::SetInterval { secs: 3600 }),
            Err(FrameError::OutOfRange("interval", 1)),
            Ok(Command::SetValve { open: false }),
            Ok(Command::SetValve { open: false }),
            Ok(Command::SetValve { open: false }),
            Ok(Command::SetValve { open: false }),
        ]
    );
    assert!(
        cmds.iter()
            .all(|c| c.confirmable && c.content_format == Some(42))
    );
    assert!(
        cmds.windows(2)
            .all(|w| w[0].received_at <= w[1].received_at)
    );
    assert_eq!(cmds[0].frame, valve);
    assert_eq!(cmds[0].mid, first.header.message_id);
    assert_eq!(cmds[0].token, first.get_token());
    assert_eq!(cmds[0].from, peer.addr());
    assert_eq!(dev.stats().duplicates, 2);
    assert!(matches!(
        dev.wait_for_commands(8, Duration::from_millis(50)),
        Err(SimError::WaitTimeout { wanted: 8, got: 7 })
    ));
}

#[test]
fn a_separate_command_response_follows_the_empty_ack_and_is_retransmitted() {
    let mut peer = Peer::new();
    let (dev, addr) = registered(&peer, DeviceOptions::fast());
    dev.set_command_behaviour(CommandBehaviour::Separate {
        delay: Duration::from_millis(100),
        result: 0,
    });
    let t0 = Instant::now();
    let (req, ack) = command(&mut peer, &[0x81, 1], addr);
    let ack = ack.unwrap();
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(code(&ack), Code::EMPTY);
    assert_eq!(ack.header.message_id, req.header.message_id);
    // A retransmitted request gets the empty ACK again, and one response only.
    peer.send(&req, addr);
    let (again, _) = peer.recv();
    assert_eq!(code(&again), Code::EMPTY);

    let (resp, from) = peer.recv();
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert_eq!(resp.header.get_type(), MessageType::Confirmable);
    assert_eq!(code(&resp), Code::CHANGED);
    assert_eq!(resp.get_token(), req.get_token());
    assert_eq!(resp.payload, [0xA0, 0]);
    // Not acknowledged: retransmitted with the same message id; then acknowledged.
    let (resp2, _) = peer.recv();
    assert_eq!(resp2.header.message_id, resp.header.message_id);
    peer.ack(resp.header.message_id, from);
    assert!(peer.try_recv(Duration::from_millis(600)).is_none());
    assert_eq!(dev.commands_received().len(), 1);
    assert_eq!(
        dev.commands_received()[0].command,
        Ok(Command::SetValve { open: true })
    );
}

#[test]
fn sleeps_and_wakes_from_a_new_port() {
    let mut peer = Peer::new();
    let (dev, addr) = registered(&peer, DeviceOptions::fast());
    observe(&mut peer, &[5], addr);
    dev.sleep();
    assert!(dev.is_asleep());
    assert!(matches!(dev.update(), Err(SimError::Asleep)));
    let (_, ans) = command(&mut peer, &[0x81, 1], addr);
    assert!(ans.is_none());
    assert_eq!(dev.stats().dropped_asleep, 1);
    assert!(dev.commands_received().is_empty());

    thread::scope(|s| {
        let h = s.spawn(|| dev.wake());
        let (upd, from) = peer.recv();
        assert_ne!(from, addr, "a wake comes from a new port");
        assert_eq!(code(&upd), Code::POST);
        assert_eq!(wire::uri_path(&upd), "rd/a1b2");
        assert!(queries(&upd).is_empty());
        assert!(upd.payload.is_empty());
        peer.answer(&upd, Code::CHANGED, None, from);
        h.join().unwrap().unwrap();
        assert!(!dev.is_asleep());
        assert_eq!(dev.local_addr(), from);

        // Answers again, on the new address; the old port is closed.
        let (_, ans) = command(&mut peer, &[0x81, 1], from);
        assert_eq!(ans.unwrap().payload, [0xA0, 0]);
        let (_, ans) = command(&mut peer, &[0x81, 1], addr);
        assert!(ans.is_none());
        assert_eq!(dev.commands_received().len(), 1);

        // Wake by a notification on the observe token.
        dev.sleep();
        let h = s.spawn(|| dev.wake_with_notification(Report::default(), true));
        let (n, from2) = peer.recv();
        assert_ne!(from2, from);
        assert_eq!(n.get_token(), [5]);
        peer.ack(n.header.message_id, from2);
        h.join().unwrap().unwrap();
    });
}

#[test]
fn updates_with_a_lifetime_and_deregisters() {
    let peer = Peer::new();
    let (dev, addr) = registered(&peer, DeviceOptions::fast());
    thread::scope(|s| {
        let h = s.spawn(|| dev.update_with_lifetime(600));
        let (upd, from) = peer.recv();
        assert_eq!(from, addr);
        assert_eq!(wire::uri_path(&upd), "rd/a1b2");
        assert_eq!(queries(&upd), ["lt=600"]);
        peer.answer(&upd, Code::CHANGED, None, from);
        h.join().unwrap().unwrap();

        // The registration expired: 4.04 surfaces, the client registers again.
        let h = s.spawn(|| dev.update());
        let (upd, from) = peer.recv();
        peer.answer(&upd, Code::NOT_FOUND, None, from);
        match h.join().unwrap() {
            Err(SimError::Refused { code, .. }) => assert_eq!(code, Code::NOT_FOUND),
            other => panic!("{other:?}"),
        }
        let h = s.spawn(|| dev.register_again());
        let (reg, from) = peer.recv();
        assert!(queries(&reg).contains(&"lt=600".to_owned()));
        peer.answer(&reg, Code::CREATED, Some("rd/new"), from);
        h.join().unwrap().unwrap();
        assert_eq!(dev.location().as_deref(), Some("rd/new"));

        let h = s.spawn(|| dev.deregister());
        let (del, from) = peer.recv();
        assert_eq!(code(&del), Code::DELETE);
        assert_eq!(wire::uri_path(&del), "rd/new");
        peer.answer(&del, Code::DELETED, None, from);
        h.join().unwrap().unwrap();
    });
    assert!(dev.location().is_none());
    assert!(matches!(dev.update(), Err(SimError::NotRegistered)));
}

#[test]
fn unknown_resources_are_not_found_and_pings_reset() {
    let mut peer = Peer::new();
    let (_dev, addr) = registered(&peer, DeviceOptions::fast());
    let req = peer.request(Code::GET, "3/0/0", &[1], &[]);
    peer.send(&req, addr);
    let (ans, _) = peer.recv();
    assert_eq!(code(&ans), Code::NOT_FOUND);
    let ping = wire::packet(MessageType::Confirmable, Code::EMPTY, 77, &[]);
    peer.send(&ping, addr);
    let (rst, _) = peer.recv();
    assert_eq!(rst.header.get_type(), MessageType::Reset);
    assert_eq!(rst.header.message_id, 77);
}

#[test]
fn watermeter_frames() {
    let r = Report {
        battery: 100,
        signal: -128,
        reading: u32::MAX,
        valve_open: true,
    };
    assert_eq!(Report::decode(&r.encode()), Ok(r));
    assert_eq!(r.encode()[2], 0x80);
    assert_eq!(Report::decode(&[1, 2, 3]), Err(FrameError::Length(3)));
    assert_eq!(
        Command::decode(&[0x81, 1]),
        Ok(Command::SetValve { open: true })
    );
    assert_eq!(
        Command::decode(&[0x81, 2]),
        Err(FrameError::OutOfRange("valve", 2))
    );
    assert_eq!(Command::decode(&[0x81]), Err(FrameError::Length(1)));
    assert_eq!(
        Command::decode(&[0x82, 0, 1, 0x51, 0x80]),
        Ok(Command::SetInterval { secs: 86_400 })
    );
    assert_eq!(
        Command::decode(&[0x82, 0, 1, 0x51, 0x81]),
        Err(FrameError::OutOfRange("interval", 86_401))
    );
    assert_eq!(Command::decode(&[0x55]), Err(FrameError::UnknownTag(0x55)));
    assert_eq!(Command::decode(&[]), Err(FrameError::Length(0)));
    assert_eq!(Command::response(3), [0xA0, 3]);
    assert_eq!(node_id(42), "860000000000042");
    assert_eq!(Code::new(4, 29), Code::TOO_MANY_REQUESTS);
    assert_eq!(Code::TOO_MANY_REQUESTS.to_string(), "4.29");
}

// ---------------------------------------------------------------------------------------
// Bulk mode against a small LwM2M server thread.

#[derive(Debug, Default)]
struct ServerState {
    /// location id → endpoint.
    endpoints: HashMap<u32, String>,
    /// location id → every address it sent from, in order.
    addrs: HashMap<u32, Vec<SocketAddr>>,
    /// location id → observe token established (ACK 2.05 with Observe).
    observed: HashMap<u32, Vec<u8>>,
    /// location id → command frames to send after its next update.
    queued: HashMap<u32, Vec<Vec<u8>>>,
    /// location id → command answers (code, payload).
    answers: HashMap<u32, Vec<(Code, Vec<u8>)>>,
    /// location id → notifications received.
    notifications: HashMap<u32, u32>,
    updates: u32,
    deletes: u32,
    /// The server's own CON requests by message id: (location, is a command).
    outstanding: HashMap<u16, (u32, bool)>,
}

struct Server {
    addr: SocketAddr,
    sock: UdpSocket,
    state: Arc<Mutex<ServerState>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let state = Arc::new(Mutex::new(ServerState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2, stop2) = (
            sock.try_clone().unwrap(),
            Arc::clone(&state),
            Arc::clone(&stop),
        );
        let thread = thread::spawn(move || serve(&s2, &st2, &stop2));
        Server {
            addr: sock.local_addr().unwrap(),
            sock,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.state.lock().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn serve(sock: &UdpSocket, state: &Mutex<ServerState>, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    let mut mid = 0u16;
    let mut next_loc = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let p = Packet::from_bytes(&buf[..n]).unwrap();
        let mut st = state.lock().unwrap();
        let kind = p.header.get_type();
        let c = code(&p);
        let path = wire::uri_path(&p);
        let loc_of = |path: &str| path.strip_prefix("rd/").and_then(|s| s.parse::<u32>().ok());
        let send = |p: &Packet| sock.send_to(&p.to_bytes().unwrap(), from).unwrap();
        if kind == MessageType::Acknowledgement {
            if let Some((loc, is_command)) = st.outstanding.remove(&p.header.message_id) {
                if is_command {
                    st.answers
                        .entry(loc)
                        .or_default()
                        .push((c, p.payload.clone()));
                } else if wire::uint_of(&p, CoapOption::Observe).is_some() {
                    st.observed.insert(loc, p.get_token().to_vec());
                }
            }
            continue;
        }
        if c == Code::CONTENT {
            // A notification: its token is the location id.
            let loc = u32::from_be_bytes(p.get_token().try_into().unwrap());
            *st.notifications.entry(loc).or_default() += 1;
            st.addrs.entry(loc).or_default().push(from);
            if kind == MessageType::Confirmable {
                sock.send_to(
                    &wire::empty(MessageType::Acknowledgement, p.header.message_id),
                    from,
                )
                .unwrap();
            }
            continue;
        }
        let mut follow_up: Option<(u32, Packet, bool)> = None;
        if c == Code::POST && path == "rd" {
            let ep = queries(&p)[0].trim_start_matches("ep=").to_owned();
            let loc = next_loc;
            next_loc += 1;
            st.endpoints.insert(loc, ep);
            st.addrs.entry(loc).or_default().push(from);
            let mut ans = wire::piggybacked(&p, Code::CREATED, &[]);
            ans.add_option(CoapOption::LocationPath, b"rd".to_vec());
            ans.add_option(CoapOption::LocationPath, loc.to_string().into_bytes());
            send(&ans);
            mid = mid.wrapping_add(1);
            let mut get =
                wire::packet(MessageType::Confirmable, Code::GET, mid, &loc.to_be_bytes());
            for seg in ["19", "0", "0"] {
                get.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
            }
            get.add_option(CoapOption::Observe, Vec::new());
            follow_up = Some((loc, get, false));
        } else if let Some(loc) = loc_of(&path) {
            if !st.endpoints.contains_key(&loc) {
                send(&wire::piggybacked(&p, Code::NOT_FOUND, &[]));
            } else if c == Code::POST {
                st.updates += 1;
                st.addrs.entry(loc).or_default().push(from);
                send(&wire::piggybacked(&p, Code::CHANGED, &[]));
                if let Some(frame) = st.queued.get_mut(&loc).and_then(|q| q.pop()) {
                    mid = mid.wrapping_add(1);
                    let mut cmd = wire::packet(
                        MessageType::Confirmable,
                        Code::POST,
                        mid,
                        &mid.to_be_bytes(),
                    );
                    for seg in ["19", "1", "0"] {
                        cmd.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
                    }
                    wire::set_content_format(&mut cmd, CF_OCTET_STREAM);
                    cmd.payload = frame;
                    follow_up = Some((loc, cmd, true));
                }
            } else if c == Code::DELETE {
                st.deletes += 1;
                st.endpoints.remove(&loc);
                send(&wire::piggybacked(&p, Code::DELETED, &[]));
            }
        }
        if let Some((loc, req, is_command)) = follow_up {
            st.outstanding
                .insert(req.header.message_id, (loc, is_command));
            send(&req);
        }
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    f()
}

fn pacing(rate: f64) -> Pacing {
    Pacing {
        rate,
        max_inflight: 64,
        timeout: Duration::from_secs(30),
    }
}

#[test]
fn a_fleet_registers_sleeps_wakes_and_takes_commands() {
    const N: u32 = 3000;
    let server = Server::start();
    let mut cfg = FleetConfig::new(server.addr, N, 64, 4);
    cfg.first_node = 1_000_000;
    cfg.transmission = Transmission::fast();
    cfg.awake_for = Duration::from_millis(40);
    cfg.socket_reuse_delay = Duration::ZERO;
    let fleet = Fleet::start(cfg).unwrap();
    assert_eq!(fleet.len(), N);
    assert_eq!(fleet.local_addrs().len(), 64);

    // Register all at a pace.
    let r = fleet.register(0..N, pacing(5000.0)).unwrap();
    assert_eq!(
        (r.ok, r.failed, r.skipped, r.unfinished),
        (u64::from(N), 0, 0, 0),
        "{r:?}"
    );
    let c = fleet.counters();
    assert_eq!(c.registered, u64::from(N));
    assert!(wait_until(Duration::from_secs(10), || fleet
        .counters()
        .observes
        == u64::from(N)));
    assert!(wait_until(Duration::from_secs(10), || server
        .state()
        .observed
        .len()
        == N as usize));
    {
        let st = server.state();
        let mut eps: Vec<_> = st.endpoints.values().cloned().collect();
        eps.sort();
        eps.dedup();
        assert_eq!(eps.len(), N as usize);
        assert!(eps.contains(&node_id(1_000_000 + 17)));
        // The sockets are spread over 127.0.0.2–5.
        let ips: std::collections::BTreeSet<_> = st.addrs.values().map(|a| a[0].ip()).collect();
        assert_eq!(ips.len(), 4);
    }
    let d = fleet.device(17).unwrap().unwrap();
    assert_eq!(d.node_id, node_id(1_000_017));
    assert_eq!(d.state, DeviceState::Registered);
    assert!(d.location.as_deref().is_some_and(|l| l.starts_with("rd/")));
    assert!(d.observe_token.is_some());
    assert!(fleet.device(N).unwrap().is_none());

    // Everybody falls asleep; a request to a socket now reaches nobody.
    assert!(wait_until(Duration::from_secs(10), || fleet
        .counters()
        .awake
        == 0));
    let mut ping = wire::packet(MessageType::Confirmable, Code::POST, 1, &[1]);
    ping.add_option(CoapOption::UriPath, b"19".to_vec());
    server
        .sock
        .send_to(&ping.to_bytes().unwrap(), fleet.local_addrs()[0])
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || fleet
        .counters()
        .dropped_asleep
        >= 1));

    // Queue one command for every other device among the first 1000, then wake them.
    let chosen: Vec<u32> = (0..1000).step_by(2).collect();
    let locs: HashMap<u32, u32> = chosen
        .iter()
        .map(|&i| {
            let loc = fleet.device(i).unwrap().unwrap().location.unwrap();
            (i, loc.trim_start_matches("rd/").parse().unwrap())
        })
        .collect();
    {
        let mut st = server.state();
        for loc in locs.values() {
            st.queued
                .insert(*loc, vec![Command::SetValve { open: false }.encode()]);
        }
    }
    let r = fleet
        .wake(chosen.clone(), WakeBy::Update, pacing(5000.0))
        .unwrap();
    assert_eq!((r.ok, r.failed), (500, 0), "{r:?}");
    assert!(fleet.wait_for_commands(500, Duration::from_secs(10)));
    assert!(wait_until(Duration::from_secs(10), || {
        server.state().answers.values().map(Vec::len).sum::<usize>() == 500
    }));
    {
        let st = server.state();
        for (&i, loc) in &locs {
            assert_eq!(
                st.answers[loc],
                [(Code::CHANGED, vec![0xA0, 0])],
                "device {i}"
            );
            // The update came from another port than the registration.
            let a = &st.addrs[loc];
            assert_eq!(a.len(), 2);
            assert_ne!(a[0], a[1], "device {i}");
        }
    }
    for &i in &chosen[..20] {
        assert_eq!(fleet.device(i).unwrap().unwrap().commands, 1);
        assert_eq!(fleet.device(i + 1).unwrap().unwrap().commands, 0);
    }
    assert_eq!(fleet.counters().commands, 500);
    assert_eq!(fleet.counters().updates, 500);

    // Wake by a confirmable notification on the observe token.
    let r = fleet
        .wake(
            2000..2100,
            WakeBy::Notification { confirmable: true },
            pacing(5000.0),
        )
        .unwrap();
    assert_eq!((r.ok, r.failed), (100, 0), "{r:?}");
    assert_eq!(server.state().notifications.values().sum::<u32>(), 100);

    // Put the awake ones to sleep at once; de-register a few.
    fleet.sleep(2000..2100).unwrap();
    let r = fleet.deregister(vec![1, 3, 5], pacing(100.0)).unwrap();
    assert_eq!(r.ok, 3, "{r:?}");
    assert_eq!(
        fleet.device(3).unwrap().unwrap().state,
        DeviceState::Unregistered
    );
    assert_eq!(server.state().deletes, 3);
    // A wake skips unregistered devices.
    let r = fleet
        .wake(vec![1, 7], WakeBy::Update, pacing(100.0))
        .unwrap();
    assert_eq!((r.ok, r.skipped), (1, 1), "{r:?}");

    let lat = fleet.latencies().unwrap();
    assert_eq!(lat.register.len(), u64::from(N));
    assert_eq!(lat.update.len(), 501);
    assert_eq!(lat.wake_to_command.len(), 500);
    assert_eq!(lat.notification.len(), 100);
    let c = fleet.counters();
    assert_eq!(c.register_failed + c.update_failed + c.timeouts, 0, "{c:?}");
}

#[test]
fn a_fleet_counts_refusals_and_timeouts() {
    // Nobody listens: every registration times out after its retransmissions.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cfg = FleetConfig::new(silent.local_addr().unwrap(), 20, 8, 1);
    cfg.transmission = Transmission {
        ack_timeout: Duration::from_millis(10),
        ack_random_factor: 1.5,
        max_retransmit: 2,
    };
    cfg.socket_reuse_delay = Duration::ZERO;
    cfg.awake_for = Duration::from_millis(5);
    let fleet = Fleet::start(cfg).unwrap();
    let r = fleet.register(0..20, pacing(1000.0)).unwrap();
    assert_eq!(r.failed, 20, "{r:?}");
    assert_eq!(r.failures.get("timeout"), Some(&20));
    let c = fleet.counters();
    assert_eq!(c.retransmissions, 40);
    assert_eq!(c.timeouts, 20);
    assert_eq!(fleet.device(0).unwrap().unwrap().state, DeviceState::Failed);
    // 20 × 3 transmissions reached the socket.
    let mut n = 0;
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 512];
    while silent.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    assert_eq!(n, 60);
}

#[test]
fn a_phase_times_out_when_sockets_are_not_reusable() {
    let server = Server::start();
    let mut cfg = FleetConfig::new(server.addr, 10, 2, 1);
    cfg.transmission = Transmission::fast();
    cfg.awake_for = Duration::from_millis(10);
    // Two sockets, each reusable only after an hour: two registrations, then nothing.
    cfg.socket_reuse_delay = Duration::from_secs(3600);
    let fleet = Fleet::start(cfg).unwrap();
    let r = fleet
        .register(
            0..10,
            Pacing {
                rate: 1000.0,
                max_inflight: 10,
                timeout: Duration::from_millis(500),
            },
        )
        .unwrap();
    assert_eq!((r.ok, r.unfinished), (2, 8), "{r:?}");
    assert!(r.elapsed_us >= 500_000);
}
