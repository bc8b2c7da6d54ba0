//! Content-defined chunking with FastCDC 2020, as REv2 2.12 specifies it
//! for SplitBlob and SpliceBlob: normalization level 2, the smallest chunk a
//! quarter of the average and the largest four times it. Cut points depend
//! on the content only, so a change in the middle of a large blob changes
//! the chunks around it and no others.
//!
//! [`Chunker`] takes a blob piece by piece and holds at most one largest
//! chunk, so blobs of any size are cut in bounded memory.

use bb_proto::reapi;
use bytes::{Bytes, BytesMut};
use fastcdc::v2020::{FastCDC, Normalization};

/// REv2's bounds on the average chunk size.
const SMALLEST_AVERAGE: u64 = 1 << 10;
const LARGEST_AVERAGE: u64 = 1 << 20;

/// The parameters servers announce as `fast_cdc_2020_params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastCdcParams {
    average: usize,
    seed: u32,
}

impl FastCdcParams {
    /// REv2's recommended average: 512 KiB.
    pub const DEFAULT_AVERAGE: u64 = 512 << 10;

    /// An average between 1 KiB and 1 MiB, a power of two (so the minimum
    /// and maximum derived from it are exact).
    pub fn new(average: u64, seed: u32) -> Result<Self, String> {
        if !(SMALLEST_AVERAGE..=LARGEST_AVERAGE).contains(&average) || !average.is_power_of_two() {
            return Err(format!(
                "an average chunk size of {average} bytes: FastCDC 2020 takes a power of two from 1KiB to 1MiB"
            ));
        }
        Ok(FastCdcParams { average: average as usize, seed })
    }

    pub fn from_proto(params: &reapi::FastCdc2020Params) -> Result<Self, String> {
        Self::new(params.avg_chunk_size_bytes, params.seed)
    }

    pub fn to_proto(self) -> reapi::FastCdc2020Params {
        reapi::FastCdc2020Params { avg_chunk_size_bytes: self.average as u64, seed: self.seed }
    }

    pub fn average(self) -> usize {
        self.average
    }

    pub fn min(self) -> usize {
        self.average / 4
    }

    pub fn max(self) -> usize {
        self.average * 4
    }

    /// Where the first chunk of `data` ends, `data` being the rest of a blob
    /// or at least `max()` bytes of it.
    fn cut(self, data: &[u8]) -> usize {
        let cdc = FastCDC::with_level_and_seed(
            data,
            self.min(),
            self.average,
            self.max(),
            Normalization::Level2,
            u64::from(self.seed),
        );
        let (_, end) = cdc.cut(0, data.len());
        end.clamp(1, data.len())
    }
}

/// Cuts a blob that arrives in pieces.
pub struct Chunker {
    params: FastCdcParams,
    pending: BytesMut,
}

impl Chunker {
    pub fn new(params: FastCdcParams) -> Self {
        Chunker { params, pending: BytesMut::new() }
    }

    /// Takes the next piece of the blob; returns the chunks it completed.
    pub fn push(&mut self, data: &[u8]) -> Vec<Bytes> {
        self.pending.extend_from_slice(data);
        let mut chunks = Vec::new();
        // A cut needs to see a largest chunk's worth of data, or the end.
        while self.pending.len() >= self.params.max() {
            let end = self.params.cut(&self.pending);
            chunks.push(self.pending.split_to(end).freeze());
        }
        chunks
    }

    /// The blob ended: the chunks of what is left.
    pub fn finish(mut self) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        while !self.pending.is_empty() {
            let end = self.params.cut(&self.pending);
            chunks.push(self.pending.split_to(end).freeze());
        }
        chunks
    }

    /// All chunks of `data`, for a blob already in memory.
    pub fn split(params: FastCdcParams, data: &[u8]) -> Vec<Bytes> {
        let mut chunker = Chunker::new(params);
        let mut chunks = chunker.push(data);
        chunks.extend(chunker.finish());
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes with no structure for the chunker to latch onto.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    fn params() -> FastCdcParams {
        FastCdcParams::new(16 << 10, 0).unwrap()
    }

    #[test]
    fn averages_outside_the_api_bounds_are_refused() {
        assert!(FastCdcParams::new(512, 0).is_err());
        assert!(FastCdcParams::new(2 << 20, 0).is_err());
        assert!(FastCdcParams::new(3000, 0).is_err());
        let p = FastCdcParams::new(FastCdcParams::DEFAULT_AVERAGE, 0).unwrap();
        assert_eq!((p.min(), p.max()), (128 << 10, 2 << 20));
    }

    #[test]
    fn chunks_concatenate_to_the_blob_within_the_size_bounds() {
        let data = noise(1 << 20, 1);
        let chunks = Chunker::split(params(), &data);
        assert_eq!(chunks.concat(), data);
        let (last, rest) = chunks.split_last().unwrap();
        assert!(rest.iter().all(|c| (params().min()..=params().max()).contains(&c.len())));
        assert!(last.len() <= params().max());
        let average = data.len() / chunks.len();
        assert!((8 << 10..=32 << 10).contains(&average), "average chunk {average}");
    }

    #[test]
    fn pieces_of_any_size_give_the_same_chunks() {
        let data = noise(300_000, 2);
        let whole = Chunker::split(params(), &data);
        for piece in [1, 1000, 65_536, 100_001] {
            let mut chunker = Chunker::new(params());
            let mut chunks: Vec<Bytes> = data.chunks(piece).flat_map(|p| chunker.push(p)).collect();
            chunks.extend(chunker.finish());
            assert_eq!(chunks, whole, "pieces of {piece}");
        }
    }

    #[test]
    fn a_change_in_the_middle_changes_only_nearby_chunks() {
        let data = noise(2 << 20, 3);
        let mut changed = data.clone();
        changed[1 << 20..(1 << 20) + 100].fill(0);
        let before = Chunker::split(params(), &data);
        let after = Chunker::split(params(), &changed);
        let kept = after.iter().filter(|c| before.contains(c)).count();
        assert!(after.len() - kept <= 3, "{} of {} chunks changed", after.len() - kept, after.len());
    }

    #[test]
    fn the_seed_moves_the_cut_points() {
        let data = noise(1 << 20, 4);
        let seeded = FastCdcParams::new(16 << 10, 666).unwrap();
        assert_ne!(Chunker::split(params(), &data), Chunker::split(seeded, &data));
    }
}
