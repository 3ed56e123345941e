//! RFC 6455 framing for the server side, sans I/O: client frames in, messages out; messages
//! in, server frames out.
//!
//! Frame headers are parsed and formatted by tungstenite's `FrameHeader` (a maintained,
//! Autobahn-tested implementation); this file owns only what tungstenite cannot give us
//! without its whole socket: assembling fragmented messages from bytes read elsewhere,
//! inflating permessage-deflate messages (RFC 7692), and holding no buffer while a
//! connection is idle. Why not tungstenite's socket: see docs/architecture.md ("The
//! WebSocket layer"). Over 400 lines because half of it is tests: every framing rule has one.

use std::io::Cursor;

use bytes::Bytes;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::deflate;

/// Close codes the server sends (RFC 6455 §7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: idle timeout, or answering the client's own close.
    Normal = 1000,
    /// 1001: the server is going away (shutdown, lost broker).
    Away = 1001,
    /// 1002: the client broke the framing rules.
    Protocol = 1002,
    /// 1007: a text message that is not UTF-8, or a deflated one that does not inflate.
    Invalid = 1007,
    /// 1009: a message over the size limit.
    Size = 1009,
    /// 1011: the server cannot go on (storage lost while catching up).
    Error = 1011,
    /// 1013: the client fell too far behind; reconnect with `after`.
    Again = 1013,
    /// 4403: no longer allowed in the room (removed from a private room, or the room was made
    /// private); do not reconnect.
    Revoked = 4403,
}

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    /// Binary messages are refused by the protocol; their bytes are not kept.
    Binary,
    Ping(Bytes),
    Pong,
    /// The client's close, with its code when it gave one.
    Close(Option<u16>),
}

/// Why the client's bytes cannot be read on: the connection closes with the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("a text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("a compressed message does not inflate")]
    Inflate,
    #[error("a message is over {0} bytes")]
    TooBig(usize),
}

impl DecodeError {
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::Protocol(_) => CloseCode::Protocol,
            Self::InvalidUtf8 | Self::Inflate => CloseCode::Invalid,
            Self::TooBig(_) => CloseCode::Size,
        }
    }
}

/// A data message whose frames are still arriving.
#[derive(Debug)]
struct Fragmented {
    text: bool,
    compressed: bool,
    payload: Vec<u8>,
}

/// The reading side of one connection. Between reads it holds nothing but a partial frame
/// or message, which a client sending ordinary chat frames never leaves behind.
#[derive(Debug)]
pub struct Decoder {
    /// Bytes of a frame not yet complete; empty (and unallocated) between frames.
    unread: Vec<u8>,
    fragmented: Option<Fragmented>,
    max_message: usize,
    deflate: bool,
}

impl Decoder {
    pub fn new(max_message: usize, deflate: bool) -> Self {
        Self {
            unread: Vec::new(),
            fragmented: None,
            max_message,
            deflate,
        }
    }

    /// Takes freshly read bytes and returns every message they complete, in order. After an
    /// error nothing more may be read: the caller closes with the error's code.
    pub fn decode(&mut self, read: &[u8], out: &mut Vec<Incoming>) -> Result<(), DecodeError> {
        self.unread.extend_from_slice(read);
        let mut consumed = 0;
        let result = loop {
            match self.next_frame(consumed) {
                Ok(Some((used, message))) => {
                    consumed += used;
                    if let Some(message) = message {
                        out.push(message);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if consumed == self.unread.len() {
            // Give the memory back: an idle connection holds no read buffer.
            self.unread = Vec::new();
        } else {
            self.unread.drain(..consumed);
        }
        result
    }

    /// Parses one frame starting at `from`; `None` when it is not complete yet.
    fn next_frame(
        &mut self,
        from: usize,
    ) -> Result<Option<(usize, Option<Incoming>)>, DecodeError> {
        let available = &self.unread[from..];
        let mut cursor = Cursor::new(available);
        let (header, length) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(_) => return Err(DecodeError::Protocol("unknown opcode")),
        };
        let header_len = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
        let is_control = matches!(header.opcode, OpCode::Control(_));
        if is_control && (length > 125 || !header.is_final) {
            return Err(DecodeError::Protocol("control frames are short and whole"));
        }
        // Refuse an oversized message from its header, before its payload arrives.
        let already = self.fragmented.as_ref().map_or(0, |f| f.payload.len());
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if !is_control && already.saturating_add(length) > self.max_message {
            return Err(DecodeError::TooBig(self.max_message));
        }
        let Some(mask) = header.mask else {
            return Err(DecodeError::Protocol("client frames must be masked"));
        };
        if header.rsv2 || header.rsv3 {
            return Err(DecodeError::Protocol("reserved bits set"));
        }
        let total = header_len.saturating_add(length);
        if available.len() < total {
            return Ok(None);
        }
        let mut payload = available[header_len..total].to_vec();
        unmask(&mut payload, mask);
        let message = self.on_frame(&header, payload)?;
        Ok(Some((total, message)))
    }

    fn on_frame(
        &mut self,
        header: &FrameHeader,
        payload: Vec<u8>,
    ) -> Result<Option<Incoming>, DecodeError> {
        match header.opcode {
            OpCode::Control(control) => {
                if header.rsv1 {
                    return Err(DecodeError::Protocol("control frames are never compressed"));
                }
                Ok(Some(match control {
                    Control::Ping => Incoming::Ping(Bytes::from(payload)),
                    Control::Pong => Incoming::Pong,
                    Control::Close => Incoming::Close(close_code(&payload)?),
                    Control::Reserved(_) => return Err(DecodeError::Protocol("unknown opcode")),
                }))
            }
            OpCode::Data(Data::Continue) => {
                if header.rsv1 {
                    return Err(DecodeError::Protocol("RSV1 on a continuation frame"));
                }
                let Some(fragmented) = self.fragmented.as_mut() else {
                    return Err(DecodeError::Protocol("continuation without a message"));
                };
                fragmented.payload.extend_from_slice(&payload);
                if header.is_final {
                    let whole = self.fragmented.take();
                    return whole.map(|f| self.finish(f)).transpose();
                }
                Ok(None)
            }
            OpCode::Data(data @ (Data::Text | Data::Binary)) => {
                if self.fragmented.is_some() {
                    return Err(DecodeError::Protocol(
                        "a new message inside a fragmented one",
                    ));
                }
                if header.rsv1 && !self.deflate {
                    return Err(DecodeError::Protocol("RSV1 without permessage-deflate"));
                }
                let fragmented = Fragmented {
                    text: data == Data::Text,
                    compressed: header.rsv1,
                    payload,
                };
                if header.is_final {
                    return self.finish(fragmented).map(Some);
                }
                self.fragmented = Some(fragmented);
                Ok(None)
            }
            OpCode::Data(Data::Reserved(_)) => Err(DecodeError::Protocol("unknown opcode")),
        }
    }

    fn finish(&self, message: Fragmented) -> Result<Incoming, DecodeError> {
        let payload = if message.compressed {
            deflate::inflate(&message.payload, self.max_message)?
        } else {
            message.payload
        };
        if !message.text {
            return Ok(Incoming::Binary);
        }
        String::from_utf8(payload)
            .map(Incoming::Text)
            .map_err(|_| DecodeError::InvalidUtf8)
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (byte, key) in payload.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// The code of a close frame's payload: none, or two bytes and optional UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<Option<u16>, DecodeError> {
    match payload {
        [] => Ok(None),
        [_] => Err(DecodeError::Protocol("a one-byte close payload")),
        [high, low, reason @ ..] => {
            std::str::from_utf8(reason).map_err(|_| DecodeError::InvalidUtf8)?;
            Ok(Some(u16::from_be_bytes([*high, *low])))
        }
    }
}

/// One server frame (FIN set, unmasked), header and payload in one buffer, so a frame built
/// once can be written as-is to every receiver.
fn frame(opcode: OpCode, compressed: bool, payload: &[u8]) -> Bytes {
    let header = FrameHeader {
        is_final: true,
        rsv1: compressed,
        opcode,
        mask: None,
        ..FrameHeader::default()
    };
    let length = payload.len() as u64;
    let mut buffer = Vec::with_capacity(header.len(length) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(length, &mut buffer);
    buffer.extend_from_slice(payload);
    Bytes::from(buffer)
}

/// A text frame.
pub fn text(payload: &str) -> Bytes {
    frame(OpCode::Data(Data::Text), false, payload.as_bytes())
}

/// A text frame compressed per RFC 7692 (RSV1 set), or `None` when compressing would not
/// make it smaller.
pub fn deflated_text(payload: &[u8]) -> Option<Bytes> {
    let compressed = deflate::deflate(payload)?;
    Some(frame(OpCode::Data(Data::Text), true, &compressed))
}

pub fn ping() -> Bytes {
    frame(OpCode::Control(Control::Ping), false, &[])
}

pub fn pong(payload: &[u8]) -> Bytes {
    frame(OpCode::Control(Control::Pong), false, payload)
}

pub fn close(code: CloseCode, reason: &str) -> Bytes {
    let mut payload = (code as u16).to_be_bytes().to_vec();
    // A control payload is at most 125 bytes; reasons are short constants.
    let reason = reason.get(..reason.len().min(123)).unwrap_or_default();
    payload.extend_from_slice(reason.as_bytes());
    frame(OpCode::Control(Control::Close), false, &payload)
}

/// Echoes a client's close code back (RFC 6455 §5.5.1); codes a server may not send are
/// answered with 1000.
pub fn close_reply(code: Option<u16>) -> Bytes {
    match code {
        Some(code @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => {
            frame(OpCode::Control(Control::Close), false, &code.to_be_bytes())
        }
        _ => close(CloseCode::Normal, ""),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame, as a browser sends it.
    fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first_byte];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        let mut masked = payload.to_vec();
        unmask(&mut masked, MASK);
        out.extend_from_slice(&masked);
        out
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Incoming>, DecodeError> {
        let mut out = Vec::new();
        decoder.decode(bytes, &mut out).map(|()| out)
    }

    #[test]
    fn a_masked_text_frame_is_a_message() {
        let mut decoder = Decoder::new(65536, false);
        let got = decode_all(&mut decoder, &client_frame(0x81, b"Hello")).unwrap();
        assert_eq!(got, vec![Incoming::Text("Hello".to_owned())]);
        assert_eq!(
            decoder.unread.capacity(),
            0,
            "no buffer held between frames"
        );
    }

    #[test]
    fn frames_split_anywhere_across_reads_are_reassembled() {
        let mut bytes = client_frame(0x01, "Hé".as_bytes());
        bytes.extend(client_frame(0x89, b"p")); // a ping between fragments
        bytes.extend(client_frame(0x80, "llo wörld".as_bytes()));
        for split in 0..bytes.len() {
            let mut decoder = Decoder::new(65536, false);
            let mut got = decode_all(&mut decoder, &bytes[..split]).unwrap();
            got.extend(decode_all(&mut decoder, &bytes[split..]).unwrap());
            assert_eq!(
                got,
                vec![
                    Incoming::Ping(Bytes::from_static(b"p")),
                    Incoming::Text("Héllo wörld".to_owned())
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header() {
        let mut decoder = Decoder::new(10, false);
        let frame = client_frame(0x81, &[b'a'; 11]);
        // Only the header has arrived: the size is already known.
        let err = decode_all(&mut decoder, &frame[..8]).unwrap_err();
        assert_eq!(err, DecodeError::TooBig(10));
        assert_eq!(err.close_code(), CloseCode::Size);

        // Fragments count together.
        let mut decoder = Decoder::new(10, false);
        let mut bytes = client_frame(0x01, b"123456");
        bytes.extend(client_frame(0x80, b"78901"));
        assert_eq!(
            decode_all(&mut decoder, &bytes).unwrap_err(),
            DecodeError::TooBig(10)
        );
    }

    #[test]
    fn framing_violations_close_with_1002_and_bad_text_with_1007() {
        let unmasked = [0x81, 0x01, b'a'];
        let cases: Vec<(Vec<u8>, CloseCode)> = vec![
            (unmasked.to_vec(), CloseCode::Protocol),
            (client_frame(0xC1, b"a"), CloseCode::Protocol), // RSV1 without deflate
            (client_frame(0xA1, b"a"), CloseCode::Protocol), // RSV2
            (client_frame(0x80, b"a"), CloseCode::Protocol), // lone continuation
            (client_frame(0x09, b""), CloseCode::Protocol),  // fragmented ping
            (client_frame(0x83, b"a"), CloseCode::Protocol), // reserved opcode
            (client_frame(0x81, &[0xff, 0xfe]), CloseCode::Invalid),
            (client_frame(0x88, &[0x03]), CloseCode::Protocol),
        ];
        for (bytes, code) in cases {
            let mut decoder = Decoder::new(65536, false);
            let err = decode_all(&mut decoder, &bytes).unwrap_err();
            assert_eq!(err.close_code(), code, "{bytes:x?}: {err}");
        }
        let mut decoder = Decoder::new(65536, false);
        let mut two_starts = client_frame(0x01, b"a");
        two_starts.extend(client_frame(0x81, b"b"));
        assert!(matches!(
            decode_all(&mut decoder, &two_starts),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn control_frames_and_binary() {
        let mut decoder = Decoder::new(65536, false);
        let mut bytes = client_frame(0x82, &[1, 2, 3]);
        bytes.extend(client_frame(0x8A, b""));
        bytes.extend(client_frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        assert_eq!(
            decode_all(&mut decoder, &bytes).unwrap(),
            vec![
                Incoming::Binary,
                Incoming::Pong,
                Incoming::Close(Some(1000))
            ]
        );
    }

    #[test]
    fn a_deflated_message_inflates_when_negotiated() {
        let text = "sounds good, see you at the standup tomorrow — sounds good, see you";
        let compressed = deflate::deflate(text.as_bytes()).unwrap();
        let mut decoder = Decoder::new(65536, true);
        assert_eq!(
            decode_all(&mut decoder, &client_frame(0xC1, &compressed)).unwrap(),
            vec![Incoming::Text(text.to_owned())]
        );
        // Fragmented: RSV1 on the first frame only.
        let (head, tail) = compressed.split_at(compressed.len() / 2);
        let mut bytes = client_frame(0x41, head);
        bytes.extend(client_frame(0x80, tail));
        assert_eq!(
            decode_all(&mut decoder, &bytes).unwrap(),
            vec![Incoming::Text(text.to_owned())]
        );
        // The RFC 7692 §7.2.3.1 example: "Hello" from another implementation.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(
            decode_all(&mut decoder, &client_frame(0xC1, &hello)).unwrap(),
            vec![Incoming::Text("Hello".to_owned())]
        );
    }

    #[test]
    fn an_inflated_message_over_the_limit_is_refused() {
        let big = "a".repeat(5000);
        let compressed = deflate::deflate(big.as_bytes()).unwrap();
        let mut decoder = Decoder::new(4096, true);
        assert_eq!(
            decode_all(&mut decoder, &client_frame(0xC1, &compressed)).unwrap_err(),
            DecodeError::TooBig(4096)
        );
        let mut decoder = Decoder::new(4096, true);
        assert_eq!(
            decode_all(&mut decoder, &client_frame(0xC1, &[0xff, 0xff, 0xff])).unwrap_err(),
            DecodeError::Inflate
        );
    }

    #[test]
    fn server_frames_are_unmasked_and_whole() {
        assert_eq!(&text("Hi")[..], &[0x81, 0x02, b'H', b'i']);
        assert_eq!(&ping()[..], &[0x89, 0x00]);
        assert_eq!(
            &close(CloseCode::Again, "x")[..],
            &[0x88, 0x03, 0x03, 0xf5, b'x']
        );
        assert_eq!(&close_reply(Some(1005))[..], &[0x88, 0x02, 0x03, 0xe8]);
        let long = "x".repeat(300);
        let frame = text(&long);
        assert_eq!(&frame[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(frame.len(), 304);
        let deflated = deflated_text(long.as_bytes()).unwrap();
        assert_eq!(deflated[0], 0xC1, "FIN + RSV1 + text");
        assert!(deflated.len() < 40);
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        const MAX: usize = 1024;

        /// Feeds `bytes` in pieces cut at `cuts`; what was decoded, or the first refusal.
        fn decode_in_pieces(
            decoder: &mut Decoder,
            bytes: &[u8],
            cuts: &[usize],
        ) -> Result<Vec<Incoming>, DecodeError> {
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort_unstable();
            let mut out = Vec::new();
            for piece in points.windows(2) {
                decoder.decode(&bytes[piece[0]..piece[1]], &mut out)?;
                // Only an unfinished frame is kept: a header (at most 14 bytes) and a payload
                // the limit allows.
                assert!(
                    decoder.unread.len() <= MAX + 14,
                    "{} bytes held",
                    decoder.unread.len()
                );
            }
            Ok(out)
        }

        /// A client message: (first byte, payload).
        fn client_message() -> impl Strategy<Value = (u8, Vec<u8>)> {
            prop_oneof![
                any::<String>().prop_map(|t| (0x81, t.into_bytes())),
                vec(any::<u8>(), 0..125).prop_map(|p| (0x89, p)),
                vec(any::<u8>(), 0..125).prop_map(|p| (0x8a, p)),
            ]
        }

        proptest! {
            /// Whatever a client sends, in whatever pieces, decoding never panics, never holds
            /// more than one frame's worth, and a refusal is one of the contract's closes.
            #[test]
            fn arbitrary_bytes_never_panic_and_hold_at_most_one_frame(
                bytes in vec(any::<u8>(), 0..4096),
                cuts in vec(any::<usize>(), 0..8),
                deflate in any::<bool>(),
            ) {
                let mut decoder = Decoder::new(MAX, deflate);
                if let Err(e) = decode_in_pieces(&mut decoder, &bytes, &cuts) {
                    prop_assert!(matches!(
                        e.close_code(),
                        CloseCode::Protocol | CloseCode::Invalid | CloseCode::Size
                    ));
                }
            }

            /// Valid frames decode to the same messages however the reads split them.
            #[test]
            fn a_valid_stream_decodes_the_same_however_it_is_split(
                messages in vec(client_message(), 1..6),
                cuts in vec(any::<usize>(), 0..12),
            ) {
                let bytes: Vec<u8> = messages
                    .iter()
                    .flat_map(|(first, payload)| client_frame(*first, payload))
                    .collect();
                let whole = decode_all(&mut Decoder::new(1 << 20, false), &bytes);
                let split = decode_in_pieces(&mut Decoder::new(1 << 20, false), &bytes, &cuts);
                prop_assert_eq!(&whole, &split);
                let texts = messages.iter().filter(|(first, _)| *first == 0x81).count();
                let decoded = whole.expect("valid frames decode");
                prop_assert_eq!(
                    decoded.iter().filter(|m| matches!(m, Incoming::Text(_))).count(),
                    texts
                );
            }
        }
    }
}
