//! Block-wise transfer (RFC 7959): Block1 and Block2 option values, reassembly of a request
//! body sent in Block1 blocks, and slicing of a body into blocks for sending.
//!
//! A device may send a register body or a report in Block1 blocks: the server feeds each block
//! to a [`Block1Assembler`], answers 2.31 Continue (echoing the Block1 option) while
//! [`Block1Progress::Continue`] comes back, and processes the body once
//! [`Block1Progress::Complete`] does. [`Block1Error::Incomplete`] is answered 4.08 Request
//! Entity Incomplete and [`Block1Error::TooLarge`] 4.13 Request Entity Too Large. Responses
//! larger than the block size go out in Block2 blocks cut by [`block_of`], and so do command
//! payloads in Block1 blocks.

#[cfg(test)]
mod tests;

use coap_lite::{CoapOption, Packet};

use super::message::{self, set_option};

/// The largest SZX; 7 is reserved (RFC 7959 §2.2).
pub const MAX_SZX: u8 = 6;

/// The largest block number, 20 bits (RFC 7959 §2.2).
pub const MAX_NUM: u32 = 0x000F_FFFF;

/// The default block size of `docs/coap.md`: 1024 bytes.
pub const DEFAULT_SZX: u8 = 6;

/// Why a block option value or a Block1 body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The option value is longer than 3 bytes.
    #[error("block option value of {len} bytes; at most 3")]
    TooLong {
        /// The value's length.
        len: usize,
    },
    /// SZX 7, which is reserved.
    #[error("block size exponent {szx} is reserved; 0-6 are allowed")]
    ReservedSzx {
        /// The exponent.
        szx: u8,
    },
    /// A block number beyond 20 bits.
    #[error("block number {num} does not fit in 20 bits")]
    NumTooLarge {
        /// The number.
        num: u32,
    },
}

/// A Block1 or Block2 option value: block number, more flag and size exponent (RFC 7959 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockValue {
    /// The block number (20 bits).
    pub num: u32,
    /// Whether more blocks follow (in Block2 requests: unused, false).
    pub more: bool,
    /// The size exponent: the block size is `16 << szx` bytes, `szx` 0–6.
    pub szx: u8,
}

impl BlockValue {
    /// A checked value.
    pub fn new(num: u32, more: bool, szx: u8) -> Result<Self, BlockError> {
        let value = Self { num, more, szx };
        value.check()?;
        Ok(value)
    }

    fn check(&self) -> Result<(), BlockError> {
        if self.szx > MAX_SZX {
            return Err(BlockError::ReservedSzx { szx: self.szx });
        }
        if self.num > MAX_NUM {
            return Err(BlockError::NumTooLarge { num: self.num });
        }
        Ok(())
    }

    /// The block size in bytes, `16 << szx` (only meaningful for `szx` 0–6).
    #[must_use]
    pub const fn size(&self) -> usize {
        16usize << (self.szx & 0x07)
    }

    /// The byte offset of the block in the body: `num * size`.
    #[must_use]
    pub const fn offset(&self) -> u64 {
        (self.num as u64) * (self.size() as u64)
    }

    /// Reads an option value of 0–3 bytes (leading zero bytes accepted).
    pub fn decode(bytes: &[u8]) -> Result<Self, BlockError> {
        if bytes.len() > 3 {
            return Err(BlockError::TooLong { len: bytes.len() });
        }
        let raw = bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        let value = Self {
            num: raw >> 4,
            more: raw & 0x08 != 0,
            szx: (raw & 0x07) as u8,
        };
        value.check()?;
        Ok(value)
    }

    /// The option value in its shortest form (0–3 bytes).
    pub fn encode(&self) -> Result<Vec<u8>, BlockError> {
        self.check()?;
        let raw = (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx);
        Ok(message::uint_bytes(raw))
    }
}

/// The SZX of a block size (16, 32, ..., 1024 bytes), `None` for any other size.
#[must_use]
pub fn szx_for_size(size: usize) -> Option<u8> {
    (0..=MAX_SZX).find(|&szx| 16usize << szx == size)
}

fn read(packet: &Packet, option: CoapOption) -> Result<Option<BlockValue>, BlockError> {
    packet
        .get_first_option(option)
        .map(|value| BlockValue::decode(value))
        .transpose()
}

fn write(packet: &mut Packet, option: CoapOption, value: BlockValue) -> Result<(), BlockError> {
    set_option(packet, option, value.encode()?);
    Ok(())
}

/// The Block1 option of a packet, if present.
pub fn block1(packet: &Packet) -> Result<Option<BlockValue>, BlockError> {
    read(packet, CoapOption::Block1)
}

/// The Block2 option of a packet, if present.
pub fn block2(packet: &Packet) -> Result<Option<BlockValue>, BlockError> {
    read(packet, CoapOption::Block2)
}

/// Sets the Block1 option, replacing any previous value.
pub fn set_block1(packet: &mut Packet, value: BlockValue) -> Result<(), BlockError> {
    write(packet, CoapOption::Block1, value)
}

/// Sets the Block2 option, replacing any previous value.
pub fn set_block2(packet: &mut Packet, value: BlockValue) -> Result<(), BlockError> {
    write(packet, CoapOption::Block2, value)
}

/// Block `num` of `body` in blocks of `16 << szx` bytes, and whether more blocks follow.
///
/// Block 0 of an empty body is the empty slice with no more blocks. `None` when the block
/// starts beyond the body (answered 4.02 Bad Option to a Block2 request, RFC 7959 §2.4), or
/// `szx` or `num` is out of range.
#[must_use]
pub fn block_of(body: &[u8], num: u32, szx: u8) -> Option<(&[u8], bool)> {
    let block = BlockValue::new(num, false, szx).ok()?;
    let start = usize::try_from(block.offset()).ok()?;
    if start > body.len() || (start == body.len() && num > 0) {
        return None;
    }
    let end = start.saturating_add(block.size()).min(body.len());
    Some((body.get(start..end)?, end < body.len()))
}

/// Why a Block1 block was refused. The assembler is reset afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Block1Error {
    /// A block that does not continue the body received so far (a gap, a repeat, or a first
    /// block other than 0): 4.08 Request Entity Incomplete (RFC 7959 §2.9.2).
    #[error("block {num} starts at byte {offset}, but {received} bytes have been received")]
    Incomplete {
        /// The block's number.
        num: u32,
        /// The block's offset.
        offset: u64,
        /// Bytes received so far.
        received: usize,
    },
    /// The body would exceed the maximum size: 4.13 Request Entity Too Large (RFC 7959 §2.9.3).
    #[error("request body exceeds {max} bytes")]
    TooLarge {
        /// The maximum body size.
        max: usize,
    },
    /// A block with the more flag whose payload is not exactly the block size (RFC 7959 §2.3):
    /// 4.00 Bad Request.
    #[error("block {num} carries {len} bytes with more blocks to come; its size is {size}")]
    WrongSize {
        /// The block's number.
        num: u32,
        /// The payload's length.
        len: usize,
        /// The block size.
        size: usize,
    },
}

/// What [`Block1Assembler::push`] made of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block1Progress {
    /// More blocks are expected: answer 2.31 Continue with the request's Block1 option.
    Continue,
    /// The last block arrived: here is the whole body. The assembler is empty again.
    Complete(Vec<u8>),
}

/// Reassembles a request body sent in Block1 blocks (RFC 7959 §2.5), for one transfer at a time
/// (one per device and resource).
///
/// Blocks must arrive in order; a block 0 always starts a new body. The block size may shrink
/// during the transfer (the server's 2.31 may ask for smaller blocks, §2.5): only the byte
/// offset of each block must match the bytes received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block1Assembler {
    max_body: usize,
    body: Vec<u8>,
    active: bool,
}

impl Block1Assembler {
    /// An empty assembler that refuses bodies over `max_body` bytes.
    #[must_use]
    pub const fn new(max_body: usize) -> Self {
        Self {
            max_body,
            body: Vec::new(),
            active: false,
        }
    }

    /// Whether a transfer is under way.
    #[must_use]
    pub const fn in_progress(&self) -> bool {
        self.active
    }

    /// Bytes received so far in the current transfer.
    #[must_use]
    pub fn received(&self) -> usize {
        self.body.len()
    }

    /// Forgets the current transfer.
    pub fn reset(&mut self) {
        self.body = Vec::new();
        self.active = false;
    }

    /// Takes one block with its payload.
    pub fn push(
        &mut self,
        block: BlockValue,
        payload: &[u8],
    ) -> Result<Block1Progress, Block1Error> {
        let result = self.accept(block, payload);
        if !matches!(result, Ok(Block1Progress::Continue)) {
            self.reset();
        }
        result
    }

    fn accept(&mut self, block: BlockValue, payload: &[u8]) -> Result<Block1Progress, Block1Error> {
        if block.num == 0 {
            self.body.clear();
            self.active = true;
        }
        let offset = block.offset();
        if !self.active || u64::try_from(self.body.len()).ok() != Some(offset) {
            return Err(Block1Error::Incomplete {
                num: block.num,
                offset,
                received: self.body.len(),
            });
        }
        if (block.more && payload.len() != block.size()) || payload.len() > block.size() {
            return Err(Block1Error::WrongSize {
                num: block.num,
                len: payload.len(),
                size: block.size(),
            });
        }
        if self.body.len().saturating_add(payload.len()) > self.max_body {
            return Err(Block1Error::TooLarge { max: self.max_body });
        }
        self.body.extend_from_slice(payload);
        if block.more {
            Ok(Block1Progress::Continue)
        } else {
            Ok(Block1Progress::Complete(std::mem::take(&mut self.body)))
        }
    }
}
