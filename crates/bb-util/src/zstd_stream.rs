//! Streaming zstd, chunk by chunk, for `compressed-blobs/zstd` ByteStream
//! transfers. Output is produced in bounded pieces, so a small compressed
//! input cannot make the server allocate a huge buffer.

use bytes::Bytes;
use zstd::stream::raw::{Decoder, Encoder, InBuffer, Operation, OutBuffer};

/// Size of each piece of output.
const PIECE: usize = 128 << 10;

/// The level for compressing reads: fast, since blobs are often already
/// compressed and the network is rarely slower than level 1.
const LEVEL: i32 = 1;

pub struct StreamDecoder {
    decoder: Decoder<'static>,
    /// Whether the last input ended exactly at the end of a frame.
    frame_complete: bool,
    pending_output: bool,
}

impl StreamDecoder {
    pub fn new() -> std::io::Result<Self> {
        Ok(StreamDecoder { decoder: Decoder::new()?, frame_complete: true, pending_output: false })
    }

    /// The next piece of decompressed output of `input`, resuming at
    /// `*position` and advancing it; `None` once the input is used up and
    /// nothing is held back. One piece at a time lets the caller stop a
    /// decompression bomb before it is expanded.
    pub fn next_piece(&mut self, input: &[u8], position: &mut usize) -> std::io::Result<Option<Bytes>> {
        loop {
            if *position == input.len() && !self.pending_output {
                return Ok(None);
            }
            let mut buffer = InBuffer::around(input);
            buffer.set_pos(*position);
            let mut piece = vec![0u8; PIECE];
            let mut output = OutBuffer::around(&mut piece[..]);
            let hint = self.decoder.run(&mut buffer, &mut output)?;
            let written = output.pos();
            *position = buffer.pos();
            self.frame_complete = hint == 0;
            // A full piece means the decoder may hold more output back.
            self.pending_output = written == PIECE;
            if written > 0 {
                piece.truncate(written);
                return Ok(Some(Bytes::from(piece)));
            }
        }
    }

    /// Fails unless the data fed so far ended with a complete frame.
    pub fn finish(&self) -> std::io::Result<()> {
        if self.frame_complete {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "zstd data ends in the middle of a frame",
            ))
        }
    }
}

pub struct StreamEncoder {
    encoder: Encoder<'static>,
}

impl StreamEncoder {
    pub fn new() -> std::io::Result<Self> {
        Ok(StreamEncoder { encoder: Encoder::new(LEVEL)? })
    }

    /// Compresses `input`, appending whatever output is ready to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut input = InBuffer::around(input);
        while input.pos() < input.src.len() {
            self.run(out, |encoder, output| encoder.run(&mut input, output))?;
        }
        Ok(())
    }

    /// Ends the frame, appending the remaining output to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        loop {
            let remaining = self.run(out, |encoder, output| encoder.finish(output, true))?;
            if remaining == 0 {
                return Ok(());
            }
        }
    }

    fn run(
        &mut self,
        out: &mut Vec<u8>,
        step: impl FnOnce(&mut Encoder<'static>, &mut OutBuffer<'_, [u8]>) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        let start = out.len();
        out.resize(start + PIECE, 0);
        let mut output = OutBuffer::around(&mut out[start..]);
        let result = step(&mut self.encoder, &mut output);
        let written = output.pos();
        out.truncate(start + written);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut encoder = StreamEncoder::new().unwrap();
        let mut out = Vec::new();
        for piece in data.chunks(chunk) {
            encoder.feed(piece, &mut out).unwrap();
        }
        encoder.finish(&mut out).unwrap();
        out
    }

    fn decompress(data: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
        let mut decoder = StreamDecoder::new().unwrap();
        let mut out = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            let mut position = 0;
            while let Some(b) = decoder.next_piece(piece, &mut position).map_err(|e| e.to_string())? {
                out.extend_from_slice(&b);
            }
        }
        decoder.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn round_trips_in_any_chunking() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect();
        let compressed = compress(&data, 1 << 20);
        assert!(compressed.len() < data.len());
        assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), data);
        for chunk in [7, 4096, 1 << 20] {
            assert_eq!(decompress(&compressed, chunk).unwrap(), data);
        }
        assert_eq!(decompress(&compress(b"", 1), 1).unwrap(), b"");
    }

    #[test]
    fn rejects_truncated_and_garbage_input() {
        let compressed = compress(&vec![1u8; 100_000], 1000);
        assert!(decompress(&compressed[..compressed.len() - 3], 100).is_err());
        assert!(decompress(b"definitely not zstd", 5).is_err());
    }

    #[test]
    fn sink_can_stop_a_bomb() {
        let compressed = zstd::encode_all(&vec![0u8; 50 << 20][..], 3).unwrap();
        let mut decoder = StreamDecoder::new().unwrap();
        let mut position = 0;
        let first = decoder.next_piece(&compressed, &mut position).unwrap().unwrap();
        assert_eq!(first.len(), PIECE, "output comes in bounded pieces");
        assert!(position <= compressed.len());
    }
}
