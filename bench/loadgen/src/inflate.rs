//! permessage-deflate (RFC 7692) for the load generator's connections, under tungstenite.
//!
//! tokio-tungstenite 0.27 does not implement the extension, so a connection that offers it
//! reads through [`Inflating`]: it passes the handshake response through, then parses the
//! server's frames and rewrites every compressed one (RSV1 set) into the plain frame
//! tungstenite expects. Only `server_no_context_takeover` is offered, so each message inflates
//! on its own. The client never compresses what it sends (the extension allows that).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The offer a load-generator connection sends.
pub const OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

pub struct Inflating<S> {
    inner: S,
    /// Off: bytes pass through untouched (a connection that did not offer the extension).
    enabled: bool,
    /// Bytes read from the socket and not yet rewritten.
    raw: Vec<u8>,
    /// Rewritten bytes, handed to tungstenite from `given` on.
    ready: Vec<u8>,
    given: usize,
    /// The HTTP response is behind us: bytes are frames from here on.
    in_frames: bool,
    inflater: Decompress,
    /// Compressed messages seen (to check that the server compressed at all).
    pub inflated: u64,
}

impl<S> Inflating<S> {
    pub fn new(inner: S, enabled: bool) -> Self {
        Self {
            inner,
            enabled,
            raw: Vec::new(),
            ready: Vec::new(),
            given: 0,
            in_frames: false,
            inflater: Decompress::new(false),
            inflated: 0,
        }
    }

    /// Moves every complete unit (the response head, then whole frames) from `raw` to `ready`.
    fn rewrite(&mut self) -> io::Result<()> {
        if !self.in_frames {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            self.ready.extend(self.raw.drain(..end + 4));
            self.in_frames = true;
        }
        loop {
            let Some((header_len, payload_len)) = frame_extent(&self.raw) else {
                return Ok(());
            };
            let total = header_len + payload_len;
            if self.raw.len() < total {
                return Ok(());
            }
            let first = self.raw[0];
            if first & 0x40 == 0 {
                self.ready.extend(self.raw.drain(..total));
                continue;
            }
            let mut compressed = self.raw[header_len..total].to_vec();
            compressed.extend_from_slice(&[0, 0, 0xff, 0xff]);
            self.raw.drain(..total);
            let payload = self.inflate(&compressed)?;
            self.inflated += 1;
            push_header(&mut self.ready, first & !0x40, payload.len());
            self.ready.extend_from_slice(&payload);
        }
    }

    fn inflate(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        self.inflater.reset(false);
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut read = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.len().max(1024));
            }
            let before_in = self.inflater.total_in();
            let status = self
                .inflater
                .decompress_vec(&input[read..], &mut out, FlushDecompress::Sync)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            read += (self.inflater.total_in() - before_in) as usize;
            // Done when all input is in and the output did not fill up (nothing held back).
            let done = read >= input.len() && out.len() < out.capacity();
            if done || status == Status::StreamEnd {
                return Ok(out);
            }
        }
    }
}

/// The header length and payload length of the frame starting `raw`, once its header is in.
fn frame_extent(raw: &[u8]) -> Option<(usize, usize)> {
    let second = *raw.get(1)?;
    let masked = second & 0x80 != 0;
    let mask_len = if masked { 4 } else { 0 };
    let (header, len) = match second & 0x7f {
        126 => (4, u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]) as usize),
        127 => {
            let bytes: [u8; 8] = raw.get(2..10)?.try_into().ok()?;
            (10, u64::from_be_bytes(bytes) as usize)
        }
        n => (2, n as usize),
    };
    Some((header + mask_len, len))
}

fn push_header(out: &mut Vec<u8>, first: u8, len: usize) {
    out.push(first);
    if len < 126 {
        out.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.enabled {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        loop {
            if this.given < this.ready.len() {
                let n = (this.ready.len() - this.given).min(buf.remaining());
                buf.put_slice(&this.ready[this.given..this.given + n]);
                this.given += n;
                if this.given == this.ready.len() {
                    this.ready.clear();
                    this.given = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    this.raw.extend_from_slice(read.filled());
                    this.rewrite()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn deflated_frame(text: &str) -> Vec<u8> {
        let mut compress = Compress::new(Compression::fast(), false);
        let mut out = Vec::with_capacity(text.len() + 64);
        compress
            .compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        let mut frame = Vec::new();
        push_header(&mut frame, 0x80 | 0x40 | 0x1, out.len());
        frame.extend_from_slice(&out);
        frame
    }

    #[test]
    fn rewrites_compressed_frames_and_passes_the_rest() {
        let mut s = Inflating::new(tokio::io::empty(), true);
        s.raw
            .extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        let long = "a chat message ".repeat(20);
        s.raw.extend(deflated_frame(&long));
        s.raw.extend([0x89, 0x00]); // a ping, uncompressed
        s.raw.extend(deflated_frame("hi"));
        s.rewrite().unwrap();
        let mut expected = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        push_header(&mut expected, 0x81, long.len());
        expected.extend_from_slice(long.as_bytes());
        expected.extend([0x89, 0x00, 0x81, 0x02, b'h', b'i']);
        assert_eq!(s.ready, expected);
        assert_eq!(s.inflated, 2);
        assert!(s.raw.is_empty());
    }
}
