//! `--compression`: permessage-deflate on WebSockets for clients that offer it, gzip/br on
//! HTTP responses and the web app's files, and neither when turned off.
//!
//! The deflate client here is written from the RFC with tungstenite's frame header and
//! flate2, independently of the server's codec: it offers the extension like a browser,
//! inflates what the server compressed, and compresses what it sends.

use std::io::Read;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::helpers::{PROMPTLY, TestServer, connect, http};

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A WebSocket client that offers permessage-deflate.
struct DeflateClient {
    stream: TcpStream,
    unread: Vec<u8>,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    extensions: Option<String>,
    /// How many data frames arrived compressed (RSV1), and how many in all.
    compressed_frames: usize,
    frames: usize,
}

impl DeflateClient {
    async fn connect(server: &TestServer, path: &str) -> Self {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "accept key: {head}"
        );
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        Self {
            stream,
            unread: Vec::new(),
            extensions,
            compressed_frames: 0,
            frames: 0,
        }
    }

    /// The next text message, inflated if it came compressed.
    async fn recv(&mut self) -> Value {
        tokio::time::timeout(PROMPTLY, async {
            loop {
                let mut cursor = std::io::Cursor::new(&self.unread[..]);
                if let Some((header, length)) = FrameHeader::parse(&mut cursor).unwrap() {
                    let start = cursor.position() as usize;
                    let end = start + length as usize;
                    if self.unread.len() >= end {
                        let payload = self.unread[start..end].to_vec();
                        self.unread.drain(..end);
                        assert!(header.mask.is_none(), "server frames are unmasked");
                        assert!(header.is_final, "the server sends whole messages");
                        match header.opcode {
                            OpCode::Data(Data::Text) => {
                                self.frames += 1;
                                let text = if header.rsv1 {
                                    self.compressed_frames += 1;
                                    inflate(&payload)
                                } else {
                                    payload
                                };
                                return serde_json::from_slice(&text).unwrap();
                            }
                            OpCode::Control(Control::Ping) => {}
                            other => panic!("unexpected frame {other:?}"),
                        }
                        continue;
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the server closed the connection");
                self.unread.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("a frame in time")
    }

    async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Sends a masked text message, compressed (RSV1) when `compress`.
    async fn send(&mut self, value: &Value, compress: bool) {
        let text = value.to_string();
        let payload = if compress {
            deflate(text.as_bytes())
        } else {
            text.into_bytes()
        };
        let mask = [0x12, 0x34, 0x56, 0x78];
        let header = FrameHeader {
            is_final: true,
            rsv1: compress,
            opcode: OpCode::Data(Data::Text),
            mask: Some(mask),
            ..FrameHeader::default()
        };
        let mut frame = Vec::new();
        header.format(payload.len() as u64, &mut frame).unwrap();
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }
}

fn deflate(input: &[u8]) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(input.len() + 64);
    compressor
        .compress_vec(input, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

fn inflate(input: &[u8]) -> Vec<u8> {
    let mut decompressor = Decompress::new(false);
    let mut data = input.to_vec();
    data.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(input.len() * 10 + 1024);
    decompressor
        .decompress_vec(&data, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

fn typical_text() -> String {
    "sounds good — see you at the standup tomorrow, I'll bring the notes".to_owned()
}

#[tokio::test]
async fn a_client_offering_deflate_gets_it_and_reads_every_frame_type() {
    let server = TestServer::start(&[]).await;
    let mut alice = DeflateClient::connect(&server, "/ws/chat/general/?username=alice").await;
    let extensions = alice
        .extensions
        .clone()
        .expect("permessage-deflate negotiated");
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    assert!(
        extensions.contains("server_no_context_takeover"),
        "{extensions}"
    );
    assert!(
        extensions.contains("client_no_context_takeover"),
        "{extensions}"
    );
    let welcome = alice.recv().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["online"], json!(["alice"]));

    // A plain client in the same room, to post and type.
    let (mut bob, _) = connect(&server, "general", "bob", "").await;
    assert_eq!(alice.recv_type("presence").await["username"], "bob");
    bob.send(json!({"type": "typing", "is_typing": true})).await;
    assert_eq!(alice.recv_type("typing").await["username"], "bob");

    // Alice posts compressed; both read it, byte for byte.
    let text = typical_text();
    alice
        .send(
            &json!({"type": "chat_message", "message": text, "client_id": "c-1"}),
            true,
        )
        .await;
    let mine = alice.recv_type("chat_message").await;
    assert_eq!(mine["message"]["content"], text);
    let theirs = bob.recv_type("chat_message").await;
    assert_eq!(theirs["message"], mine["message"]);

    // A resend (uncompressed this time) gets the duplicate; a bad frame an error; ping a pong.
    alice
        .send(
            &json!({"type": "chat_message", "message": text, "client_id": "c-1"}),
            false,
        )
        .await;
    assert_eq!(alice.recv_type("duplicate").await["message"]["seq"], 1);
    alice.send(&json!({"type": "nonsense"}), true).await;
    assert_eq!(alice.recv_type("error").await["code"], "unknown_type");
    alice.send(&json!({"type": "ping"}), false).await;
    alice.recv_type("pong").await;

    // Large frames came compressed, and smaller than their JSON.
    assert!(
        alice.compressed_frames >= 2,
        "{} compressed",
        alice.compressed_frames
    );
    assert!(
        alice.frames > alice.compressed_frames,
        "short frames go plain"
    );
}

#[tokio::test]
async fn deflate_is_not_negotiated_with_compression_off_or_without_an_offer() {
    let server = TestServer::start(&["--compression", "off"]).await;
    let mut alice = DeflateClient::connect(&server, "/ws/chat/general/?username=alice").await;
    assert_eq!(alice.extensions, None);
    assert_eq!(alice.recv().await["type"], "welcome");
    alice
        .send(
            &json!({"type": "chat_message", "message": typical_text()}),
            false,
        )
        .await;
    alice.recv_type("chat_message").await;
    assert_eq!(alice.compressed_frames, 0);

    // A plain client on a server with compression on gets plain frames (the e2e suite's
    // WebSocket client offers no extension).
    let server = TestServer::start(&[]).await;
    let (_bob, welcome) = connect(&server, "general", "bob", "").await;
    assert_eq!(welcome["type"], "welcome");
}

/// Posts enough to make the history page larger than the compression threshold.
async fn fill_history(server: &TestServer) {
    let client = http();
    for i in 0..20 {
        let response = client
            .post(server.url("/api/rooms/general/messages"))
            .json(&json!({"username": "alice", "content": format!("{} #{i}", typical_text())}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}

fn decode(encoding: &str, body: &[u8]) -> String {
    let mut text = String::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .unwrap(),
        "br" => brotli::Decompressor::new(body, 4096)
            .read_to_string(&mut text)
            .unwrap(),
        other => panic!("unexpected encoding {other}"),
    };
    text
}

#[tokio::test]
async fn rest_responses_are_compressed_as_the_request_accepts() {
    let server = TestServer::start(&[]).await;
    fill_history(&server).await;
    let client = http();
    let plain = client
        .get(server.url("/api/rooms/general/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.headers().get("content-encoding"), None);
    assert_eq!(plain.headers()["vary"], "accept-encoding");
    let plain = plain.text().await.unwrap();
    assert!(plain.len() > 1024);
    for (accept, expected) in [
        ("gzip", "gzip"),
        ("gzip, deflate, br", "br"),
        ("br;q=0, gzip", "gzip"),
    ] {
        let response = client
            .get(server.url("/api/rooms/general/messages"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-encoding"], expected, "{accept}");
        let body = response.bytes().await.unwrap();
        assert!(
            body.len() * 2 < plain.len(),
            "{accept}: {} bytes",
            body.len()
        );
        assert_eq!(decode(expected, &body), plain, "{accept}");
    }
    // Small answers stay plain.
    let small = client
        .get(server.url("/healthz"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(small.headers().get("content-encoding"), None);
}

#[tokio::test]
async fn web_app_files_carry_an_etag_a_max_age_and_compress() {
    let server = TestServer::start(&[]).await;
    let client = http();
    let first = client
        .get(server.url("/static/app.css"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        first.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    assert_eq!(first.headers()["content-encoding"], "br");
    let css = decode("br", &first.bytes().await.unwrap());
    assert!(css.contains("color"), "the stylesheet");

    let again = client
        .get(server.url("/static/app.css"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());

    let page = client
        .get(server.url("/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().contains_key("etag"));
    assert!(page.headers().contains_key("content-security-policy"));
    assert_eq!(page.headers()["content-encoding"], "gzip");
    assert!(decode("gzip", &page.bytes().await.unwrap()).contains("<html"));

    let off = TestServer::start(&["--compression", "off"]).await;
    let plain = client
        .get(off.url("/static/app.css"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.headers().get("content-encoding"), None);
    assert_eq!(
        plain.headers()["etag"].to_str().unwrap(),
        etag,
        "one version, one tag"
    );
    fill_history(&off).await;
    let history = client
        .get(off.url("/api/rooms/general/messages"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(history.headers().get("content-encoding"), None);
}
