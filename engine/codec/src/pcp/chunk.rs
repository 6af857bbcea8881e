//! Splitting a software package into PCP chunks (`spec/device-management.md §15.5`).
//!
//! A [`ChunkPlan`] fixes the chunk size and count for one package. The package upload path uses
//! it to reject packages the protocol cannot carry (empty, chunk size outside 32..=500, more than
//! 65535 chunks); the OTA scheduler uses it to fill the new-version notification (message 20) and
//! to answer chunk requests (message 21) in any order, which is what resuming downloads needs
//! (§24 item 17).

use std::ops::Range;

use super::error::{Error, Result};
use super::payload::ChunkResponse;
use super::result::ChunkResult;

/// The smallest chunk size a package may use, in bytes.
pub const MIN_CHUNK_SIZE: u16 = 32;

/// The largest chunk size a package may use, in bytes.
pub const MAX_CHUNK_SIZE: u16 = 500;

/// The chunk size used when a package does not set one.
pub const DEFAULT_CHUNK_SIZE: u16 = 500;

/// The most chunks a package may have: the chunk count travels as a 16-bit word.
pub const MAX_CHUNK_COUNT: u16 = u16::MAX;

/// How one package is split: chunk `k` covers bytes `k·S .. min((k+1)·S, size)`.
///
/// A plan always has a chunk size within 32..=500 and between 1 and 65535 chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkPlan {
    package_size: u64,
    chunk_size: u16,
    chunk_count: u16,
}

impl ChunkPlan {
    /// Plans a package of `package_size` bytes with chunks of `chunk_size` bytes.
    ///
    /// Fails with [`Error::ChunkSizeOutOfRange`] outside 32..=500, then with
    /// [`Error::EmptyPackage`] for a zero-byte package, then with [`Error::TooManyChunks`] when
    /// `ceil(package_size / chunk_size)` exceeds 65535.
    pub fn new(package_size: u64, chunk_size: u32) -> Result<Self> {
        let size_ok = u32::from(MIN_CHUNK_SIZE)..=u32::from(MAX_CHUNK_SIZE);
        let chunk_size = match u16::try_from(chunk_size) {
            Ok(s) if size_ok.contains(&chunk_size) => s,
            _ => return Err(Error::ChunkSizeOutOfRange { size: chunk_size }),
        };
        if package_size == 0 {
            return Err(Error::EmptyPackage);
        }
        let count = package_size.div_ceil(u64::from(chunk_size));
        let Ok(chunk_count) = u16::try_from(count) else {
            return Err(Error::TooManyChunks {
                package_size,
                chunk_size,
                count,
            });
        };
        Ok(Self {
            package_size,
            chunk_size,
            chunk_count,
        })
    }

    /// Plans a package with the default chunk size of 500 bytes.
    pub fn with_default_chunk_size(package_size: u64) -> Result<Self> {
        Self::new(package_size, u32::from(DEFAULT_CHUNK_SIZE))
    }

    /// The package size in bytes.
    #[must_use]
    pub const fn package_size(&self) -> u64 {
        self.package_size
    }

    /// The chunk size in bytes; every chunk but the last has exactly this size.
    #[must_use]
    pub const fn chunk_size(&self) -> u16 {
        self.chunk_size
    }

    /// The number of chunks, at least 1.
    #[must_use]
    pub const fn chunk_count(&self) -> u16 {
        self.chunk_count
    }

    /// Whether `index` names a chunk of this package.
    #[must_use]
    pub const fn contains(&self, index: u16) -> bool {
        index < self.chunk_count
    }

    /// The byte range chunk `index` covers, failing with [`Error::ChunkIndexOutOfRange`] when
    /// `index` is not below the chunk count.
    pub fn range(&self, index: u16) -> Result<Range<u64>> {
        if !self.contains(index) {
            return Err(Error::ChunkIndexOutOfRange {
                index,
                count: self.chunk_count,
            });
        }
        let size = u64::from(self.chunk_size);
        let start = u64::from(index) * size;
        let end = (start + size).min(self.package_size);
        Ok(start..end)
    }

    /// The bytes of chunk `index` within `package`.
    ///
    /// Fails with [`Error::PackageSizeMismatch`] if `package` is not the size the plan was made
    /// for, and with [`Error::ChunkIndexOutOfRange`] for an index past the end.
    pub fn chunk<'a>(&self, package: &'a [u8], index: u16) -> Result<&'a [u8]> {
        let mismatch = Error::PackageSizeMismatch {
            expected: self.package_size,
            actual: package.len(),
        };
        if u64::try_from(package.len()).ok() != Some(self.package_size) {
            return Err(mismatch);
        }
        let range = self.range(index)?;
        match (usize::try_from(range.start), usize::try_from(range.end)) {
            (Ok(start), Ok(end)) => package.get(start..end).ok_or(mismatch),
            _ => Err(mismatch),
        }
    }

    /// Answers a chunk request for `index` from `package`: the chunk data, or
    /// [`ChunkResult::NoSuchChunk`] (`0x81`) when the index is past the end.
    ///
    /// Whether the request names the task's target version, and so deserves
    /// [`ChunkResult::TaskNotFound`] instead, is for the caller to decide. Fails only with
    /// [`Error::PackageSizeMismatch`].
    pub fn respond(&self, package: &[u8], index: u16) -> Result<ChunkResponse> {
        match self.chunk(package, index) {
            Ok(data) => ChunkResponse::chunk(index, data),
            Err(Error::ChunkIndexOutOfRange { .. }) => {
                Ok(ChunkResponse::refused(index, ChunkResult::NoSuchChunk))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_an_exact_multiple_of_the_chunk_size() -> Result<()> {
        let plan = ChunkPlan::new(1000, 500)?;
        assert_eq!(plan.chunk_count(), 2);
        assert_eq!(plan.range(0)?, 0..500);
        assert_eq!(plan.range(1)?, 500..1000);
        assert!(plan.range(2).is_err());
        Ok(())
    }

    #[test]
    fn last_chunk_is_short() -> Result<()> {
        let plan = ChunkPlan::new(1001, 500)?;
        assert_eq!(plan.chunk_count(), 3);
        assert_eq!(plan.range(2)?, 1000..1001);
        let small = ChunkPlan::new(10, 32)?;
        assert_eq!(small.chunk_count(), 1);
        assert_eq!(small.range(0)?, 0..10);
        Ok(())
    }

    #[test]
    fn default_chunk_size_is_500() -> Result<()> {
        let plan = ChunkPlan::with_default_chunk_size(16)?;
        assert_eq!(plan.chunk_size(), 500);
        assert_eq!(plan.chunk_count(), 1);
        Ok(())
    }

    #[test]
    fn chunk_size_bounds() {
        assert_eq!(
            ChunkPlan::new(100, 31),
            Err(Error::ChunkSizeOutOfRange { size: 31 })
        );
        assert_eq!(
            ChunkPlan::new(100, 501),
            Err(Error::ChunkSizeOutOfRange { size: 501 })
        );
        assert_eq!(
            ChunkPlan::new(100, 65_536 + 100),
            Err(Error::ChunkSizeOutOfRange { size: 65_636 })
        );
        assert_eq!(
            ChunkPlan::new(100, 0),
            Err(Error::ChunkSizeOutOfRange { size: 0 })
        );
        assert!(ChunkPlan::new(100, 32).is_ok());
        assert!(ChunkPlan::new(100, 500).is_ok());
    }

    #[test]
    fn empty_package_is_rejected() {
        assert_eq!(ChunkPlan::new(0, 500), Err(Error::EmptyPackage));
        // The chunk size is checked first.
        assert_eq!(
            ChunkPlan::new(0, 10),
            Err(Error::ChunkSizeOutOfRange { size: 10 })
        );
    }

    #[test]
    fn chunk_count_limit() -> Result<()> {
        for size in [32u16, 500] {
            let s = u64::from(size);
            let plan = ChunkPlan::new(65_535 * s, u32::from(size))?;
            assert_eq!(plan.chunk_count(), 65_535);
            assert_eq!(plan.range(65_534)?, 65_534 * s..65_535 * s);
            assert_eq!(
                ChunkPlan::new(65_535 * s + 1, u32::from(size)),
                Err(Error::TooManyChunks {
                    package_size: 65_535 * s + 1,
                    chunk_size: size,
                    count: 65_536,
                })
            );
        }
        assert_eq!(
            ChunkPlan::new(u64::MAX, 500),
            Err(Error::TooManyChunks {
                package_size: u64::MAX,
                chunk_size: 500,
                count: u64::MAX.div_ceil(500),
            })
        );
        Ok(())
    }

    #[test]
    fn chunks_cover_the_package_once() -> Result<()> {
        let package: Vec<u8> = (0..=255u8).cycle().take(1234).collect();
        let plan = ChunkPlan::new(1234, 100)?;
        let mut joined = Vec::new();
        for k in 0..plan.chunk_count() {
            joined.extend_from_slice(plan.chunk(&package, k)?);
        }
        assert_eq!(joined, package);
        assert_eq!(plan.chunk(&package, 12)?.len(), 34);
        Ok(())
    }

    #[test]
    fn chunk_checks_package_size_and_index() -> Result<()> {
        let plan = ChunkPlan::new(100, 32)?;
        assert_eq!(
            plan.chunk(&[0; 99], 0),
            Err(Error::PackageSizeMismatch {
                expected: 100,
                actual: 99
            })
        );
        assert_eq!(
            plan.chunk(&[0; 100], 4),
            Err(Error::ChunkIndexOutOfRange { index: 4, count: 4 })
        );
        Ok(())
    }

    #[test]
    fn respond_serves_any_index_and_refuses_past_the_end() -> Result<()> {
        let package: Vec<u8> = (0..70u8).collect();
        let plan = ChunkPlan::new(70, 32)?;
        let last = plan.respond(&package, 2)?;
        assert_eq!(last.result(), ChunkResult::Success);
        assert_eq!(last.index(), 2);
        assert_eq!(last.data(), &package[64..]);
        let first = plan.respond(&package, 0)?;
        assert_eq!(first.data(), &package[..32]);
        let past = plan.respond(&package, 3)?;
        assert_eq!(past, ChunkResponse::refused(3, ChunkResult::NoSuchChunk));
        assert!(past.data().is_empty());
        assert!(plan.respond(&package[..69], 0).is_err());
        Ok(())
    }
}
