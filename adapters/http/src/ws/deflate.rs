//! permessage-deflate (RFC 7692) without per-connection state.
//!
//! The server always negotiates `server_no_context_takeover` and
//! `client_no_context_takeover`, so every message is compressed on its own: a broadcast frame
//! is compressed once and the same bytes go to every receiver that negotiated the extension,
//! and no connection keeps a 32 KiB window (or a ~300 KiB compressor) while idle. One
//! compressor and one decompressor per worker thread do all the work.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::codec::DecodeError;

/// The empty deflate block that ends a sync flush, removed from (and added back to) every
/// message (RFC 7692 §7.2.1, §7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Messages shorter than this are sent as they are: compressing them saves nothing.
pub const MIN_COMPRESSED_LEN: usize = 64;

thread_local! {
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static DECOMPRESSOR: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Compresses one message; `None` when it is too short to be worth it or would not shrink.
pub fn deflate(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() < MIN_COMPRESSED_LEN {
        return None;
    }
    COMPRESSOR.with_borrow_mut(|compressor| {
        compressor.reset();
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        loop {
            let consumed = usize::try_from(compressor.total_in()).ok()?;
            let rest = input.get(consumed..)?;
            // Sync flush: when output space is left over, everything is out.
            compressor
                .compress_vec(rest, &mut out, FlushCompress::Sync)
                .ok()?;
            if consumed + rest.len() == usize::try_from(compressor.total_in()).ok()?
                && out.len() < out.capacity()
            {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if !out.ends_with(&SYNC_TAIL) {
            return None;
        }
        out.truncate(out.len() - SYNC_TAIL.len());
        (out.len() < input.len()).then_some(out)
    })
}

/// Inflates one message, refusing output over `limit` bytes.
pub fn inflate(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let data = [input, &SYNC_TAIL[..]].concat();
    DECOMPRESSOR.with_borrow_mut(|decompressor| {
        decompressor.reset(false);
        let mut out = Vec::with_capacity(input.len().saturating_mul(3).min(limit) + 16);
        loop {
            let consumed =
                usize::try_from(decompressor.total_in()).map_err(|_| DecodeError::Inflate)?;
            let produced = out.len();
            let rest = data.get(consumed..).ok_or(DecodeError::Inflate)?;
            let status = decompressor
                .decompress_vec(rest, &mut out, FlushDecompress::Sync)
                .map_err(|_| DecodeError::Inflate)?;
            if out.len() > limit {
                return Err(DecodeError::TooBig(limit));
            }
            // A client may end its message with a final block: the tail is then left unread.
            let all_read = decompressor.total_in() == data.len() as u64;
            if status == Status::StreamEnd || (all_read && out.len() < out.capacity()) {
                return Ok(out);
            }
            if out.len() == out.capacity() {
                // Room for at most one byte over the limit, which then refuses the message.
                let room = (limit + 1)
                    .saturating_sub(out.len())
                    .clamp(1, out.capacity().max(64));
                out.reserve(room);
            } else if decompressor.total_in() == consumed as u64 && out.len() == produced {
                return Err(DecodeError::Inflate);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn round_trip_of_typical_chat_frames() {
        let frame = r#"{"type":"chat_message","message":{"room":"general","seq":1042,"username":"alice","content":"sounds good, see you at the standup tomorrow","timestamp":"2026-11-30T10:15:02.123Z","client_id":"c-7f3a"}}"#;
        let compressed = deflate(frame.as_bytes()).unwrap();
        assert!(
            compressed.len() * 10 < frame.len() * 8,
            "{} of {} bytes",
            compressed.len(),
            frame.len()
        );
        assert_eq!(inflate(&compressed, 65536).unwrap(), frame.as_bytes());
        // The compressor is reset between messages: the same input compresses the same way.
        assert_eq!(deflate(frame.as_bytes()).unwrap(), compressed);
    }

    #[test]
    fn short_or_incompressible_input_is_not_compressed() {
        assert_eq!(deflate(br#"{"type":"pong"}"#), None);
        let noise: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(deflate(&noise), None);
    }

    #[test]
    fn large_messages_round_trip() {
        let big: String = (0..20_000).map(|i| format!("{i},")).collect();
        let compressed = deflate(big.as_bytes()).unwrap();
        assert_eq!(inflate(&compressed, big.len()).unwrap(), big.as_bytes());
        assert_eq!(
            inflate(&compressed, big.len() - 1).unwrap_err(),
            DecodeError::TooBig(big.len() - 1)
        );
    }

    #[test]
    fn a_message_ending_in_a_final_block_inflates() {
        // Another implementation may close its message with a final block (BFINAL).
        let mut compressor = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(128);
        compressor
            .compress_vec(b"hello hello hello", &mut out, FlushCompress::Finish)
            .unwrap();
        assert_eq!(inflate(&out, 1024).unwrap(), b"hello hello hello");
    }
}
