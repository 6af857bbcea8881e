//! Tests of block-wise transfer with the examples of RFC 7959 §3.

use super::*;
use crate::coap::message::{self, decode, encode};
use coap_lite::{MessageType, RequestType};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn bv(num: u32, more: bool, szx: u8) -> BlockValue {
    BlockValue { num, more, szx }
}

#[test]
fn option_values_of_rfc7959_figures() -> TestResult {
    // (notation of RFC 7959, option value bytes)
    let cases: [(BlockValue, &[u8]); 9] = [
        (bv(0, true, 3), &[0x0B]),  // 2:0/1/128 (figure 2)
        (bv(1, true, 3), &[0x1B]),  // 2:1/1/128
        (bv(2, false, 3), &[0x23]), // 2:2/0/128
        (bv(0, false, 2), &[0x02]), // 2:0/0/64 (figure 3)
        (bv(4, true, 1), &[0x49]),  // 1:4/1/32 (figure 6)
        (bv(6, false, 1), &[0x61]), // 1:6/0/32
        (bv(0, false, 0), &[]),     // 0/0/16: the empty value
        (bv(16, true, 6), &[0x01, 0x0E]),
        (bv(MAX_NUM, true, 6), &[0xFF, 0xFF, 0xFE]),
    ];
    for (value, bytes) in cases {
        assert_eq!(value.encode()?, bytes, "{value:?}");
        assert_eq!(BlockValue::decode(bytes)?, value, "{bytes:02x?}");
    }
    Ok(())
}

#[test]
fn sizes_and_offsets() {
    assert_eq!(bv(0, false, 0).size(), 16);
    assert_eq!(bv(0, false, 6).size(), 1024);
    assert_eq!(bv(3, false, 2).offset(), 192);
    assert_eq!(bv(MAX_NUM, false, 6).offset(), u64::from(MAX_NUM) * 1024);
    assert_eq!(szx_for_size(16), Some(0));
    assert_eq!(szx_for_size(1024), Some(6));
    assert_eq!(szx_for_size(100), None);
    assert_eq!(szx_for_size(2048), None);
}

#[test]
fn invalid_values() {
    assert_eq!(
        BlockValue::decode(&[0, 0, 0, 1]),
        Err(BlockError::TooLong { len: 4 })
    );
    assert_eq!(
        BlockValue::decode(&[0x0F]),
        Err(BlockError::ReservedSzx { szx: 7 })
    );
    assert_eq!(
        BlockValue::new(0, false, 7),
        Err(BlockError::ReservedSzx { szx: 7 })
    );
    assert_eq!(
        BlockValue::new(MAX_NUM + 1, false, 0),
        Err(BlockError::NumTooLarge { num: MAX_NUM + 1 })
    );
    assert_eq!(
        bv(MAX_NUM + 1, false, 0).encode(),
        Err(BlockError::NumTooLarge { num: MAX_NUM + 1 })
    );
    // Leading zero bytes are accepted.
    assert_eq!(BlockValue::decode(&[0x00, 0x0B]), Ok(bv(0, true, 3)));
}

#[test]
fn options_on_packets() -> TestResult {
    let mut packet = message::request(MessageType::Confirmable, RequestType::Put, 0x1234, &[])?;
    message::set_uri_path(&mut packet, &["options"]);
    set_block1(&mut packet, bv(0, true, 3))?;
    set_block1(&mut packet, bv(1, true, 3))?;
    set_block2(&mut packet, bv(0, false, 6))?;
    let bytes = encode(&packet)?;
    let back = decode(&bytes)?;
    assert_eq!(block1(&back)?, Some(bv(1, true, 3)));
    assert_eq!(block2(&back)?, Some(bv(0, false, 6)));
    assert_eq!(block1(&message::empty_ack(1))?, None);
    assert_eq!(
        set_block2(&mut packet, bv(0, false, 7)),
        Err(BlockError::ReservedSzx { szx: 7 })
    );
    Ok(())
}

/// RFC 7959 figure 5: a PUT of 3 blocks of 128 bytes (the last one shorter).
#[test]
fn assembler_simple_block1_transfer() -> TestResult {
    let body: Vec<u8> = (0..300u16).map(|i| (i % 251) as u8).collect();
    let mut assembler = Block1Assembler::new(1024);
    assert!(!assembler.in_progress());
    assert_eq!(
        assembler.push(bv(0, true, 3), &body[..128])?,
        Block1Progress::Continue
    );
    assert!(assembler.in_progress());
    assert_eq!(
        assembler.push(bv(1, true, 3), &body[128..256])?,
        Block1Progress::Continue
    );
    assert_eq!(assembler.received(), 256);
    assert_eq!(
        assembler.push(bv(2, false, 3), &body[256..])?,
        Block1Progress::Complete(body)
    );
    assert!(!assembler.in_progress());
    assert_eq!(assembler.received(), 0);
    Ok(())
}

/// RFC 7959 figure 6: the server asks for 32-byte blocks after the first 128-byte one, and the
/// client goes on with block 4 of 32 bytes.
#[test]
fn assembler_late_negotiation() -> TestResult {
    let body = vec![7u8; 128 + 32 + 32 + 10];
    let mut assembler = Block1Assembler::new(1024);
    assembler.push(bv(0, true, 3), &body[..128])?;
    assembler.push(bv(4, true, 1), &body[128..160])?;
    assembler.push(bv(5, true, 1), &body[160..192])?;
    assert_eq!(
        assembler.push(bv(6, false, 1), &body[192..])?,
        Block1Progress::Complete(body)
    );
    Ok(())
}

#[test]
fn assembler_refuses_gaps_with_4_08() -> TestResult {
    let mut assembler = Block1Assembler::new(1024);
    assert_eq!(
        assembler.push(bv(1, true, 0), &[0; 16]),
        Err(Block1Error::Incomplete {
            num: 1,
            offset: 16,
            received: 0
        })
    );
    assembler.push(bv(0, true, 0), &[0; 16])?;
    assert_eq!(
        assembler.push(bv(2, false, 0), &[0; 4]),
        Err(Block1Error::Incomplete {
            num: 2,
            offset: 32,
            received: 16
        })
    );
    // The failure reset the transfer: block 1 is now a gap too.
    assert!(!assembler.in_progress());
    assert!(matches!(
        assembler.push(bv(1, false, 0), &[0; 4]),
        Err(Block1Error::Incomplete { .. })
    ));
    Ok(())
}

#[test]
fn assembler_refuses_a_repeated_block() -> TestResult {
    let mut assembler = Block1Assembler::new(1024);
    assembler.push(bv(0, true, 0), &[0; 16])?;
    assembler.push(bv(1, true, 0), &[0; 16])?;
    assert!(matches!(
        assembler.push(bv(1, true, 0), &[0; 16]),
        Err(Block1Error::Incomplete { .. })
    ));
    Ok(())
}

#[test]
fn block_0_restarts_the_body() -> TestResult {
    let mut assembler = Block1Assembler::new(1024);
    assembler.push(bv(0, true, 0), &[1; 16])?;
    assembler.push(bv(1, true, 0), &[1; 16])?;
    assembler.push(bv(0, true, 0), &[2; 16])?;
    assert_eq!(
        assembler.push(bv(1, false, 0), &[3; 2])?,
        Block1Progress::Complete([[2; 16].as_slice(), &[3; 2]].concat())
    );
    // A single block with more = false is a whole body.
    assert_eq!(
        assembler.push(bv(0, false, 6), b"abc")?,
        Block1Progress::Complete(b"abc".to_vec())
    );
    Ok(())
}

#[test]
fn assembler_refuses_bodies_over_the_maximum_with_4_13() -> TestResult {
    let mut assembler = Block1Assembler::new(40);
    assembler.push(bv(0, true, 0), &[0; 16])?;
    assembler.push(bv(1, true, 0), &[0; 16])?;
    assert_eq!(
        assembler.push(bv(2, true, 0), &[0; 16]),
        Err(Block1Error::TooLarge { max: 40 })
    );
    assert!(!assembler.in_progress());
    // Exactly the maximum is fine.
    assembler.push(bv(0, true, 0), &[0; 16])?;
    assembler.push(bv(1, true, 0), &[0; 16])?;
    assert_eq!(
        assembler.push(bv(2, false, 0), &[0; 8])?,
        Block1Progress::Complete(vec![0; 40])
    );
    Ok(())
}

#[test]
fn assembler_refuses_blocks_of_the_wrong_size() -> TestResult {
    let mut assembler = Block1Assembler::new(1024);
    assert_eq!(
        assembler.push(bv(0, true, 1), &[0; 31]),
        Err(Block1Error::WrongSize {
            num: 0,
            len: 31,
            size: 32
        })
    );
    assert_eq!(
        assembler.push(bv(0, false, 0), &[0; 17]),
        Err(Block1Error::WrongSize {
            num: 0,
            len: 17,
            size: 16
        })
    );
    assembler.reset();
    assert_eq!(assembler, Block1Assembler::new(1024));
    Ok(())
}

#[test]
fn slicing_a_body_into_blocks() {
    let body: Vec<u8> = (0..=99).collect();
    assert_eq!(block_of(&body, 0, 2), Some((&body[..64], true)));
    assert_eq!(block_of(&body, 1, 2), Some((&body[64..], false)));
    assert_eq!(block_of(&body, 2, 2), None);
    assert_eq!(block_of(&body, 0, 6), Some((&body[..], false)));
    assert_eq!(block_of(&body[..64], 0, 2), Some((&body[..64], false)));
    assert_eq!(block_of(&body[..64], 1, 2), None);
    assert_eq!(block_of(&[], 0, 0), Some((&[][..], false)));
    assert_eq!(block_of(&[], 1, 0), None);
    assert_eq!(block_of(&body, 0, 7), None);
    assert_eq!(block_of(&body, MAX_NUM + 1, 0), None);
    assert_eq!(block_of(&body, MAX_NUM, 6), None);
}
