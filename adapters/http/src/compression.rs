//! HTTP response compression (`--compression on`): gzip or br, as the request accepts, for
//! textual responses over 1 KiB; and the web app's files, compressed once per process and
//! served with an `ETag` and a `Cache-Control` max-age.
//!
//! Written here rather than taken from poem's `Compression` middleware, which compresses
//! every response whatever its size, decompresses request bodies (a way around the 64 KiB
//! body limit), and builds zstd's C library into the binary.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::sync::OnceLock;

use bytes::Bytes;
use poem::http::{HeaderMap, HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

/// Smaller bodies are sent as they are: compressing them saves less than it costs.
pub const MIN_COMPRESSED_BODY: usize = 1024;

/// How long a browser may use a web app file before asking again (with `If-None-Match`).
const ASSET_MAX_AGE: &str = "public, max-age=300";

/// A content coding banter produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gzip",
        }
    }

    /// The coding the request prefers among those banter produces: br over gzip at equal
    /// weight, neither when both are refused (`q=0`) or not mentioned.
    pub fn negotiate(headers: &HeaderMap) -> Option<Coding> {
        let (mut br, mut gzip, mut any) = (None, None, None);
        let offers = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','));
        for offer in offers {
            let mut parts = offer.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let weight = parts
                .filter_map(|param| param.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if name.eq_ignore_ascii_case("br") {
                br = Some(weight);
            } else if name.eq_ignore_ascii_case("gzip") {
                gzip = Some(weight);
            } else if name == "*" {
                any = Some(weight);
            }
        }
        let br = br.or(any).unwrap_or(0.0);
        let gzip = gzip.or(any).unwrap_or(0.0);
        if br > 0.0 && br >= gzip {
            Some(Coding::Brotli)
        } else if gzip > 0.0 {
            Some(Coding::Gzip)
        } else {
            None
        }
    }

    /// Compresses a whole body. `thorough` spends more time for smaller output, for bodies
    /// compressed once and served many times.
    pub fn encode(self, body: &[u8], thorough: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() / 3 + 64);
        match self {
            Self::Brotli => {
                let quality = if thorough { 11 } else { 4 };
                let mut writer = brotli::CompressorWriter::new(&mut out, 4096, quality, 22);
                // Writes into a Vec cannot fail.
                let _ = writer.write_all(body);
                drop(writer);
            }
            Self::Gzip => {
                let level = if thorough { 9 } else { 5 };
                let mut writer =
                    flate2::write::GzEncoder::new(&mut out, flate2::Compression::new(level));
                let _ = writer.write_all(body);
                let _ = writer.finish();
            }
        }
        out
    }
}

/// Whether a response's content type is text that compresses well.
fn is_textual(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json" | "application/javascript" | "application/yaml"
        )
}

/// The middleware: compresses what the endpoint answers, when enabled.
#[derive(Debug, Clone, Copy)]
pub struct CompressResponses {
    pub enabled: bool,
}

impl<E: Endpoint> Middleware<E> for CompressResponses {
    type Output = CompressResponsesEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        CompressResponsesEndpoint {
            inner,
            enabled: self.enabled,
        }
    }
}

#[derive(Debug)]
pub struct CompressResponsesEndpoint<E> {
    inner: E,
    enabled: bool,
}

impl<E: Endpoint> Endpoint for CompressResponsesEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if !self.enabled {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let coding = Coding::negotiate(req.headers());
        let mut response = self.inner.call(req).await?.into_response();
        let headers = response.headers();
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            || headers.contains_key(header::CONTENT_ENCODING)
            || !is_textual(headers)
        {
            return Ok(response);
        }
        if !response.headers().contains_key(header::VARY) {
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        let Some(coding) = coding else {
            return Ok(response);
        };
        let body = response.take_body().into_bytes().await?;
        if body.len() < MIN_COMPRESSED_BODY {
            response.set_body(body);
            return Ok(response);
        }
        let compressed = coding.encode(&body, false);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.name()),
        );
        headers.remove(header::CONTENT_LENGTH);
        response.set_body(compressed);
        Ok(response)
    }
}

/// A file of the web app, embedded in the binary: compressed on first request, once per
/// coding, and validated by its ETag.
#[derive(Debug)]
pub struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: OnceLock<String>,
    brotli: OnceLock<Bytes>,
    gzip: OnceLock<Bytes>,
}

impl Asset {
    pub const fn new(body: &'static str, content_type: &'static str) -> Self {
        Self {
            body,
            content_type,
            etag: OnceLock::new(),
            brotli: OnceLock::new(),
            gzip: OnceLock::new(),
        }
    }

    #[cfg(test)]
    pub fn body(&self) -> &'static str {
        self.body
    }

    #[cfg(test)]
    pub fn content_type(&self) -> &'static str {
        self.content_type
    }

    /// A strong validator derived from the content, the same on every node running this
    /// build.
    pub fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let mut hasher = std::hash::DefaultHasher::new();
            self.body.hash(&mut hasher);
            format!("\"{:016x}\"", hasher.finish())
        })
    }

    /// The response to a GET of this file: 304 when the client holds this version, else the
    /// body, compressed when allowed and accepted.
    pub fn response(&'static self, request: &HeaderMap, compression: bool) -> Response {
        let etag = self.etag();
        let builder = Response::builder()
            .header(header::ETAG, etag)
            .header(header::CACHE_CONTROL, ASSET_MAX_AGE)
            .header(header::VARY, "accept-encoding")
            .header("X-Content-Type-Options", "nosniff");
        let held = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == etag
            });
        if held {
            return builder.status(StatusCode::NOT_MODIFIED).finish();
        }
        let builder = builder.content_type(self.content_type);
        let coding = compression
            .then(|| Coding::negotiate(request))
            .flatten()
            .filter(|_| self.body.len() >= MIN_COMPRESSED_BODY);
        let Some(coding) = coding else {
            return builder.body(self.body);
        };
        let cell = match coding {
            Coding::Brotli => &self.brotli,
            Coding::Gzip => &self.gzip,
        };
        let body = cell.get_or_init(|| Bytes::from(coding.encode(self.body.as_bytes(), true)));
        builder
            .header(header::CONTENT_ENCODING, coding.name())
            .body(body.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read;

    use poem::http::HeaderValue;

    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn negotiation_follows_the_weights() {
        assert_eq!(Coding::negotiate(&HeaderMap::new()), None);
        assert_eq!(
            Coding::negotiate(&accept("gzip, deflate, br, zstd")),
            Some(Coding::Brotli)
        );
        assert_eq!(Coding::negotiate(&accept("gzip")), Some(Coding::Gzip));
        assert_eq!(
            Coding::negotiate(&accept("br;q=0.5, gzip;q=0.8")),
            Some(Coding::Gzip)
        );
        assert_eq!(Coding::negotiate(&accept("br;q=0, gzip;q=0")), None);
        assert_eq!(Coding::negotiate(&accept("*;q=0.3")), Some(Coding::Brotli));
        assert_eq!(Coding::negotiate(&accept("identity")), None);
    }

    #[test]
    fn both_codings_round_trip() {
        let body = r#"{"room":"general","seq":1,"content":"hello"}"#.repeat(100);
        let gz = Coding::Gzip.encode(body.as_bytes(), false);
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, body);
        let br = Coding::Brotli.encode(body.as_bytes(), true);
        let mut back = String::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, body);
        assert!(br.len() * 5 < body.len());
    }
}
