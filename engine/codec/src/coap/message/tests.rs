//! Tests of CoAP message decoding and encoding on byte literals, including the examples of
//! RFC 7252 Appendix A.

use super::*;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn header(message_type: u8, token_length: u8, code: u8, message_id: u16) -> RawHeader {
    RawHeader {
        version: 1,
        message_type,
        token_length,
        code,
        message_id,
    }
}

/// RFC 7252 Appendix A, figure 16: `CON [0x7d34] GET /temperature`, then
/// `ACK [0x7d34] 2.05 Content "22.3 C"`.
#[test]
fn rfc7252_figure_16_request_and_piggybacked_response() -> TestResult {
    let mut request_bytes = vec![0x40, 0x01, 0x7d, 0x34, 0xBB];
    request_bytes.extend_from_slice(b"temperature");
    let request = decode(&request_bytes)?;
    assert_eq!(request.header.get_type(), MessageType::Confirmable);
    assert_eq!(request.header.code, MessageClass::Request(RequestType::Get));
    assert_eq!(request.header.message_id, 0x7d34);
    assert!(request.get_token().is_empty());
    assert_eq!(uri_path(&request)?, ["temperature"]);
    assert_eq!(encode(&request)?, request_bytes);

    let mut response = piggybacked(&request, ResponseType::Content);
    response.payload = b"22.3 C".to_vec();
    let mut expected = vec![0x60, 0x45, 0x7d, 0x34, 0xFF];
    expected.extend_from_slice(b"22.3 C");
    assert_eq!(encode(&response)?, expected);
    assert_eq!(decode(&expected)?, response);
    Ok(())
}

/// RFC 7252 Appendix A, figure 18 style: a token of 4 bytes copied into the response.
#[test]
fn token_is_read_and_copied_into_the_answer() -> TestResult {
    let bytes = [
        0x44, 0x01, 0x7d, 0x36, 0x31, 0x32, 0x33, 0x34, 0xBB, b't', b'e', b'm', b'p', b'e', b'r',
        b'a', b't', b'u', b'r', b'e',
    ];
    let request = decode(&bytes)?;
    assert_eq!(request.get_token(), b"1234");
    let response = piggybacked(&request, ResponseType::Changed);
    assert_eq!(
        encode(&response)?,
        [0x64, 0x44, 0x7d, 0x36, 0x31, 0x32, 0x33, 0x34]
    );
    Ok(())
}

#[test]
fn options_with_extended_delta_and_length_and_a_payload() -> TestResult {
    // Uri-Path "rd" (11), Content-Format 40 (12), Uri-Query of 13 bytes (15: extended length),
    // Size1 = 1024 (60: extended delta 13 + 32), payload.
    let mut bytes = vec![0x42, 0x02, 0x00, 0x07, 0xAB, 0xCD];
    bytes.extend_from_slice(&[0xB2, b'r', b'd']);
    bytes.extend_from_slice(&[0x11, 40]);
    bytes.extend_from_slice(&[0x3D, 0x00]);
    bytes.extend_from_slice(b"ep=0123456789");
    bytes.extend_from_slice(&[0xD2, 60 - 15 - 13, 0x04, 0x00]);
    bytes.extend_from_slice(&[0xFF, b'<', b'/', b'>']);
    let packet = decode(&bytes)?;
    assert_eq!(packet.get_token(), [0xAB, 0xCD]);
    assert_eq!(uri_path(&packet)?, ["rd"]);
    assert_eq!(uri_query(&packet)?, ["ep=0123456789"]);
    assert_eq!(content_format(&packet)?, Some(content_format::LINK_FORMAT));
    assert_eq!(uint(&packet, CoapOption::Size1)?, Some(1024));
    assert_eq!(packet.payload, b"</>");
    assert_eq!(encode(&packet)?, bytes);
    Ok(())
}

#[test]
fn two_byte_extended_delta() -> TestResult {
    // The unknown elective option 2000: delta nibble 14, then 2000 - 269 = 0x06C3.
    let bytes = [0x50, 0x01, 0, 1, 0xE1, 0x06, 0xC3, 0x07];
    let packet = decode(&bytes)?;
    let (number, values) = packet.options().next().ok_or("one option")?;
    assert_eq!(*number, 2000);
    assert_eq!(values.front().map(Vec::as_slice), Some(&[0x07][..]));
    assert_eq!(encode(&packet)?, bytes);
    Ok(())
}

#[test]
fn ping_is_an_empty_confirmable_message() -> TestResult {
    let ping = decode(&[0x40, 0x00, 0x12, 0x34])?;
    assert!(is_ping(&ping));
    assert_eq!(ping.header.message_id, 0x1234);
    assert_eq!(encode(&reset(0x1234))?, reset_bytes(0x1234));
    assert_eq!(reset_bytes(0x1234), [0x70, 0x00, 0x12, 0x34]);
    assert!(!is_ping(&decode(&[0x60, 0x00, 0x12, 0x34])?));
    Ok(())
}

#[test]
fn empty_ack_and_reset_builders() -> TestResult {
    assert_eq!(encode(&empty_ack(0xBEEF))?, empty_ack_bytes(0xBEEF));
    assert_eq!(empty_ack_bytes(0xBEEF), [0x60, 0x00, 0xBE, 0xEF]);
    assert_eq!(decode(&empty_ack_bytes(7))?, empty_ack(7));
    assert_eq!(decode(&reset_bytes(7))?, reset(7));
    Ok(())
}

#[test]
fn short_datagrams_are_dropped() {
    for len in 0..=3 {
        let err = decode(&[0x40, 0x01, 0x00][..len]).unwrap_err();
        assert_eq!(err, DecodeError::Short { len });
        assert_eq!(err.reason(), "short");
        assert_eq!(err.reset(), None);
        assert_eq!(err.answer(), None);
    }
}

#[test]
fn unknown_version_is_ignored_even_when_confirmable() {
    // Version 2 (0x80), type CON.
    let err = decode(&[0x80, 0x01, 0x00, 0x05]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Version {
            header: RawHeader {
                version: 2,
                ..header(0, 0, 1, 5)
            }
        }
    );
    assert_eq!(err.reason(), "version");
    assert_eq!(err.reset(), None);
    assert_eq!(decode(&[0x00, 0x01, 0, 5]).unwrap_err().reason(), "version");
}

#[test]
fn token_lengths_9_to_15_are_format_errors() {
    for tkl in 9u8..=15 {
        let mut bytes = vec![0x40 | tkl, 0x01, 0x12, 0x34];
        bytes.extend(std::iter::repeat_n(0xAA, usize::from(tkl)));
        let err = decode(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TokenLength {
                header: header(0, tkl, 1, 0x1234)
            }
        );
        assert_eq!(err.reason(), "token_length");
        assert_eq!(err.reset(), Some(vec![0x70, 0x00, 0x12, 0x34]));
        // The same as NON is dropped.
        bytes[0] = 0x50 | tkl;
        assert_eq!(decode(&bytes).unwrap_err().reset(), None);
    }
}

#[test]
fn truncated_token() {
    let err = decode(&[0x44, 0x01, 0x00, 0x01, 0xAA, 0xBB]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Format {
            header: header(0, 4, 1, 1),
            problem: FormatProblem::TruncatedToken
        }
    );
    assert_eq!(err.reason(), "format");
    assert_eq!(err.reset(), Some(reset_bytes(1).to_vec()));
}

#[test]
fn empty_messages_carry_nothing() {
    let cases: [&[u8]; 4] = [
        &[0x41, 0x00, 0x00, 0x09, 0xAA],
        &[0x41, 0x00, 0x00, 0x09],
        &[0x40, 0x00, 0x00, 0x09, 0xFF, 0x01],
        &[0x40, 0x00, 0x00, 0x09, 0xB1, b'x'],
    ];
    for bytes in cases {
        let err = decode(bytes).unwrap_err();
        assert!(
            matches!(err, DecodeError::EmptyWithData { .. }),
            "{bytes:02x?}: {err:?}"
        );
        assert_eq!(err.reason(), "empty_with_data");
        assert_eq!(err.reset(), Some(reset_bytes(9).to_vec()));
    }
    // An empty ACK with data is dropped, not reset.
    let err = decode(&[0x60, 0x00, 0x00, 0x09, 0xFF, 0x01]).unwrap_err();
    assert_eq!(err.reset(), None);
}

#[test]
fn payload_marker_without_payload() {
    let err = decode(&[0x40, 0x02, 0x00, 0x01, 0xFF]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Format {
            header: header(0, 0, 2, 1),
            problem: FormatProblem::EmptyPayload
        }
    );
    assert_eq!(err.reset(), Some(reset_bytes(1).to_vec()));
    let err = decode(&[0x40, 0x02, 0x00, 0x01, 0xB2, b'r', b'd', 0xFF]).unwrap_err();
    assert_eq!(err.reason(), "format");
}

#[test]
fn malformed_options() {
    let cases: [(&[u8], FormatProblem); 7] = [
        (&[0xF1, 0x00], FormatProblem::OptionDelta15),
        (&[0x1F], FormatProblem::OptionLength15),
        (&[0xB5, b'a', b'b'], FormatProblem::TruncatedOption),
        (&[0xD0], FormatProblem::TruncatedOption),
        (&[0xE0, 0x01], FormatProblem::TruncatedOption),
        (&[0x1E, 0x00], FormatProblem::TruncatedOption),
        (&[0xE0, 0xFF, 0xFF], FormatProblem::OptionNumberOverflow),
    ];
    for (options, problem) in cases {
        let mut bytes = vec![0x50, 0x01, 0x00, 0x02];
        bytes.extend_from_slice(options);
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::Format {
                header: header(1, 0, 1, 2),
                problem
            }),
            "{options:02x?}"
        );
    }
}

#[test]
fn reserved_code_classes() {
    for code in [0x20, 0x3F, 0xC0, 0xE5, 0xFF] {
        let err = decode(&[0x40, code, 0x00, 0x03]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::ReservedCode {
                header: header(0, 0, code, 3)
            }
        );
        assert_eq!(err.reason(), "format");
        assert_eq!(err.reset(), Some(reset_bytes(3).to_vec()));
    }
}

#[test]
fn unknown_methods_are_left_to_the_caller() -> TestResult {
    let packet = decode(&[0x40, 0x08, 0x00, 0x03])?;
    assert_eq!(packet.header.code, MessageClass::Reserved(0x08));
    Ok(())
}

#[test]
fn unknown_critical_option_in_a_confirmable_request_gets_4_02() {
    // CON POST with token 0x7A and option 9 (OSCORE, not supported).
    let bytes = [0x41, 0x02, 0x01, 0x02, 0x7A, 0x91, 0x00];
    let err = decode(&bytes).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadOption {
            header: header(0, 1, 2, 0x0102),
            token: vec![0x7A],
            number: 9,
            cause: BadOptionCause::Unrecognized,
        }
    );
    assert_eq!(err.reason(), "bad_option");
    assert_eq!(err.reset(), Some(reset_bytes(0x0102).to_vec()));
    let mut expected = vec![0x61, 0x82, 0x01, 0x02, 0x7A, 0xFF];
    expected.extend_from_slice(b"bad option 9");
    assert_eq!(err.answer(), Some(expected.clone()));
    let answer = decode(&expected).unwrap();
    assert_eq!(
        answer.header.code,
        MessageClass::Response(ResponseType::BadOption)
    );
}

#[test]
fn unknown_critical_option_elsewhere() {
    // NON request: dropped.
    let err = decode(&[0x51, 0x02, 0x01, 0x02, 0x7A, 0x91, 0x00]).unwrap_err();
    assert_eq!(err.reason(), "bad_option");
    assert_eq!(err.answer(), None);
    // CON response (2.05): rejected with RST.
    let err = decode(&[0x41, 0x45, 0x01, 0x02, 0x7A, 0x91, 0x00]).unwrap_err();
    assert_eq!(err.answer(), Some(reset_bytes(0x0102).to_vec()));
    // Piggybacked in an ACK: dropped.
    let err = decode(&[0x61, 0x45, 0x01, 0x02, 0x7A, 0x91, 0x00]).unwrap_err();
    assert_eq!(err.answer(), None);
}

#[test]
fn critical_options_with_bad_length_or_repeated() {
    let cases: [(&[u8], u16, BadOptionCause); 4] = [
        // Uri-Host (3) of zero bytes.
        (&[0x30], 3, BadOptionCause::BadLength),
        // Block1 (27) of four bytes: delta 13 + 14.
        (&[0xD4, 14, 1, 2, 3, 4], 27, BadOptionCause::BadLength),
        // Block2 (23) twice.
        (&[0xD1, 10, 0x06, 0x01, 0x16], 23, BadOptionCause::Repeated),
        // If-None-Match (5) with a value.
        (&[0x51, 0x00], 5, BadOptionCause::BadLength),
    ];
    for (options, number, cause) in cases {
        let mut bytes = vec![0x40, 0x01, 0x00, 0x02];
        bytes.extend_from_slice(options);
        match decode(&bytes) {
            Err(DecodeError::BadOption {
                number: n,
                cause: c,
                ..
            }) => assert_eq!((n, c), (number, cause), "{options:02x?}"),
            other => panic!("{options:02x?}: {other:?}"),
        }
    }
}

#[test]
fn bad_elective_options_are_dropped() -> TestResult {
    // Observe (6) twice, Content-Format (12) of 3 bytes, then a good Max-Age (14).
    let bytes = [
        0x40, 0x01, 0x00, 0x02, 0x61, 0x05, 0x01, 0x07, 0x63, 0x00, 0x00, 0x28, 0x21, 0x09,
    ];
    let packet = decode(&bytes)?;
    assert_eq!(crate::coap::observe::get(&packet)?, Some(5));
    assert_eq!(
        packet.get_option(CoapOption::Observe).map(LinkedList::len),
        Some(1)
    );
    assert_eq!(content_format(&packet)?, None);
    assert_eq!(uint(&packet, CoapOption::MaxAge)?, Some(9));
    assert_eq!(
        encode(&packet)?,
        [0x40, 0x01, 0x00, 0x02, 0x61, 0x05, 0x81, 0x09]
    );
    Ok(())
}

#[test]
fn unknown_elective_options_are_kept() -> TestResult {
    // Option 2 (elective, unassigned) with one byte.
    let bytes = [0x40, 0x01, 0x00, 0x02, 0x21, 0x42];
    let packet = decode(&bytes)?;
    assert_eq!(
        packet.get_first_option(CoapOption::Unknown(2)),
        Some(&vec![0x42])
    );
    assert_eq!(encode(&packet)?, bytes);
    Ok(())
}

#[test]
fn strings_must_be_utf8() -> TestResult {
    let bytes = [0x40, 0x01, 0x00, 0x02, 0xB2, b'r', b'd', 0x42, b'e', 0xFF];
    let packet = decode(&bytes)?;
    assert_eq!(uri_path(&packet)?, ["rd"]);
    assert_eq!(uri_query(&packet), Err(OptionError::NotUtf8 { number: 15 }));
    Ok(())
}

#[test]
fn split_query_params() {
    assert_eq!(split_query("ep=urn:imei:1"), ("ep", Some("urn:imei:1")));
    assert_eq!(split_query("Q"), ("Q", None));
    assert_eq!(split_query("b="), ("b", Some("")));
    assert_eq!(split_query("a=b=c"), ("a", Some("b=c")));
}

#[test]
fn setters_replace_previous_values() -> TestResult {
    let mut packet = request(
        MessageType::Confirmable,
        RequestType::Post,
        9,
        &[1, 2, 3, 4],
    )?;
    set_uri_path(&mut packet, &["19", "1", "0"]);
    set_content_format(&mut packet, content_format::JSON);
    set_content_format(&mut packet, content_format::OCTET_STREAM);
    set_max_age(&mut packet, 30);
    set_max_age(&mut packet, 0);
    set_uri_query(&mut packet, &["lt=300", "Q"]);
    packet.payload = vec![0x81, 0x01];
    let bytes = encode(&packet)?;
    assert_eq!(
        bytes,
        [
            0x44, 0x02, 0x00, 0x09, 1, 2, 3, 4, // header, token
            0xB2, b'1', b'9', 0x01, b'1', 0x01, b'0', // Uri-Path
            0x11, 42,   // Content-Format
            0x20, // Max-Age 0
            0x16, b'l', b't', b'=', b'3', b'0', b'0', 0x01, b'Q', // Uri-Query
            0xFF, 0x81, 0x01,
        ]
    );
    let back = decode(&bytes)?;
    assert_eq!(back, packet);
    assert_eq!(content_format(&back)?, Some(42));
    assert_eq!(max_age(&back)?, Some(0));
    assert_eq!(uri_query(&back)?, ["lt=300", "Q"]);
    Ok(())
}

#[test]
fn location_path_of_a_created_answer() -> TestResult {
    let register = request(MessageType::Confirmable, RequestType::Post, 1, &[9])?;
    let mut created = piggybacked(&register, ResponseType::Created);
    set_location_path(&mut created, &["rd", "a1b2"]);
    let bytes = encode(&created)?;
    assert_eq!(
        bytes,
        [
            0x61, 0x41, 0x00, 0x01, 9, 0x82, b'r', b'd', 0x04, b'a', b'1', b'b', b'2'
        ]
    );
    assert_eq!(location_path(&decode(&bytes)?)?, ["rd", "a1b2"]);
    Ok(())
}

#[test]
fn uint_values_accept_leading_zeros_and_refuse_overlong() -> TestResult {
    // Max-Age (14): delta 13 + 1, four bytes.
    let packet = decode(&[0x40, 0x01, 0x00, 0x02, 0xD4, 0x01, 0x00, 0x00, 0x00, 0x3C])?;
    assert_eq!(max_age(&packet)?, Some(60));
    let mut packet = Packet::new();
    packet.add_option(CoapOption::ContentFormat, vec![0, 0, 40]);
    assert_eq!(
        content_format(&packet),
        Err(OptionError::UintTooLong {
            number: 12,
            len: 3,
            max: 2
        })
    );
    assert_eq!(uint_bytes(0), Vec::<u8>::new());
    assert_eq!(uint_bytes(0x0100), [1, 0]);
    assert_eq!(uint_bytes(u32::MAX), [0xFF; 4]);
    Ok(())
}

#[test]
fn encode_refuses_what_a_recipient_would_reject() -> TestResult {
    let mut packet = request(MessageType::Confirmable, RequestType::Get, 1, &[])?;
    packet.header.set_version(2);
    assert_eq!(encode(&packet), Err(EncodeError::Version { version: 2 }));

    assert!(matches!(
        request(MessageType::Confirmable, RequestType::Get, 1, &[0; 9]),
        Err(EncodeError::TokenLength { len: 9, .. })
    ));
    let mut packet = request(MessageType::Confirmable, RequestType::Get, 1, &[])?;
    packet.set_token(vec![0; 9]);
    assert_eq!(
        encode(&packet),
        Err(EncodeError::TokenLength { len: 9, field: 9 })
    );
    packet.set_token(vec![0; 2]);
    packet.header.set_token_length(3);
    assert_eq!(
        encode(&packet),
        Err(EncodeError::TokenLength { len: 2, field: 3 })
    );

    let mut packet = empty_ack(1);
    packet.payload = vec![1];
    assert_eq!(encode(&packet), Err(EncodeError::EmptyWithData));
    let mut packet = empty_ack(1);
    packet.add_option(CoapOption::UriPath, b"x".to_vec());
    assert_eq!(encode(&packet), Err(EncodeError::EmptyWithData));

    let mut packet = request(MessageType::Confirmable, RequestType::Get, 1, &[])?;
    packet.header.code = MessageClass::Request(RequestType::UnKnown);
    assert_eq!(
        encode(&packet),
        Err(EncodeError::ReservedCode { code: 0xFF })
    );

    let mut packet = request(MessageType::Confirmable, RequestType::Get, 1, &[])?;
    let long = "x".repeat(256);
    set_uri_path(&mut packet, &[&long]);
    assert!(matches!(
        encode(&packet),
        Err(EncodeError::OptionValue {
            number: 11,
            len: 256,
            ..
        })
    ));
    let mut packet = request(MessageType::Confirmable, RequestType::Get, 1, &[])?;
    packet.add_option(CoapOption::Block2, vec![0x06]);
    packet.add_option(CoapOption::Block2, vec![0x16]);
    assert!(matches!(
        encode(&packet),
        Err(EncodeError::OptionValue { number: 23, .. })
    ));

    let mut packet = request(MessageType::Confirmable, RequestType::Post, 1, &[])?;
    packet.payload = vec![0; MAX_DATAGRAM_LEN];
    assert!(matches!(encode(&packet), Err(EncodeError::TooLong { .. })));
    packet.payload = vec![0; MAX_DATAGRAM_LEN - HEADER_LEN - 1];
    assert_eq!(encode(&packet)?.len(), MAX_DATAGRAM_LEN);
    Ok(())
}

#[test]
fn known_options_table() {
    assert!(KNOWN_OPTIONS.contains(&11));
    assert!(KNOWN_OPTIONS.contains(&27));
    assert!(!KNOWN_OPTIONS.contains(&9));
    assert!(is_critical(11));
    assert!(!is_critical(12));
}

#[test]
fn types_that_cannot_carry_their_code() -> TestResult {
    // An empty NON, an ACK carrying GET, an RST carrying 2.05; a CON 2.05 is fine.
    for bytes in [[0x50, 0x00, 0, 1], [0x60, 0x01, 0, 1], [0x70, 0x45, 0, 1]] {
        let err = decode(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Format {
                header: header(bytes[0] >> 4 & 3, 0, bytes[1], 1),
                problem: FormatProblem::TypeAndCode
            }
        );
        assert_eq!(err.reset(), None);
    }
    assert!(decode(&[0x40, 0x45, 0, 1]).is_ok());

    let mut packet = empty_ack(1);
    packet.header.set_type(MessageType::NonConfirmable);
    assert_eq!(
        encode(&packet),
        Err(EncodeError::TypeAndCode {
            message_type: 1,
            code: 0
        })
    );
    let packet = request(MessageType::Acknowledgement, RequestType::Get, 1, &[])?;
    assert_eq!(
        encode(&packet),
        Err(EncodeError::TypeAndCode {
            message_type: 2,
            code: 1
        })
    );
    let mut packet = reset(1);
    packet.header.code = MessageClass::Response(ResponseType::Content);
    assert_eq!(
        encode(&packet),
        Err(EncodeError::TypeAndCode {
            message_type: 3,
            code: 0x45
        })
    );
    Ok(())
}
