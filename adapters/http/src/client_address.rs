//! The client's address, decided in one place for every request: the TCP peer's address, or,
//! when the peer is a trusted proxy (`--trusted-proxies`), the address that proxy forwarded.
//!
//! [`RequestLog`] (the outermost middleware) works it out once, keeps it in the request's
//! extensions for [`client_address`] (the per-address connection limit, the REST rate limit)
//! and logs every request with it.
//!
//! The rule: from a trusted peer, take `X-Forwarded-For` (every such header, in order) or, when
//! there is none, the `for=` parameters of `Forwarded` (RFC 7239); walking from the right,
//! the first entry that is not itself a trusted proxy is the client. If every entry is trusted,
//! the left-most is. An entry that is not an address (`unknown`, an obfuscated `_name`,
//! garbage) reached on that walk makes the request count as the peer's. From a peer that is not
//! trusted the headers are ignored: anybody can write them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use ipnet::IpNet;
use poem::http::HeaderMap;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use tracing::Instrument;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// A `--trusted-proxies` entry that is neither a CIDR block nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR block (such as 10.0.0.0/8 or fd00::/8) or an IP address")]
pub struct TrustedProxiesError(pub String);

impl TrustedProxies {
    /// Comma-separated CIDR blocks (`10.0.0.0/8`, `fd00::/8`) or single addresses; empty trusts
    /// nobody.
    pub fn parse(raw: &str) -> Result<Self, TrustedProxiesError> {
        raw.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .map(|net| net.trunc())
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| TrustedProxiesError(item.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` (an IPv4-mapped IPv6 address counts as its IPv4 one) is trusted.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client's address for a request from `peer` carrying `headers`.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let hops = if headers.contains_key("x-forwarded-for") {
            x_forwarded_for(headers)
        } else if headers.contains_key("forwarded") {
            forwarded_for(headers)
        } else {
            return peer;
        };
        self.right_most_untrusted(&hops).unwrap_or(peer)
    }

    /// Walking from the right: the first hop not trusted, else the left-most; `None` when a
    /// malformed hop comes first, or there is none.
    fn right_most_untrusted(&self, hops: &[Option<IpAddr>]) -> Option<IpAddr> {
        let mut left_most = None;
        for hop in hops.iter().rev() {
            let address = (*hop)?;
            if !self.contains(address) {
                return Some(address);
            }
            left_most = Some(address);
        }
        left_most
    }
}

/// The entries of every `X-Forwarded-For` header, left to right; `None` for one that is not an
/// address.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        match value.to_str() {
            Ok(value) => hops.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|entry| !entry.is_empty())
                    .map(node_address),
            ),
            Err(_) => hops.push(None),
        }
    }
    hops
}

/// The `for=` of every element of every `Forwarded` header, left to right; `None` for one that
/// is not an address, or an element that does not parse. Elements without `for=` are skipped.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all("forwarded") {
        let Some(elements) = value.to_str().ok().and_then(|v| split_unquoted(v, ',')) else {
            hops.push(None);
            continue;
        };
        for element in elements.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            match element_for(element) {
                Ok(Some(node)) => hops.push(node_address(&node)),
                Ok(None) => {}
                Err(()) => hops.push(None),
            }
        }
    }
    hops
}

/// The unquoted `for=` value of one `Forwarded` element (`for=1.2.3.4;proto=https`).
fn element_for(element: &str) -> Result<Option<String>, ()> {
    let mut found = None;
    for pair in split_unquoted(element, ';').ok_or(())? {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').ok_or(())?;
        if name.trim().eq_ignore_ascii_case("for") {
            found = Some(unquote(value.trim()).ok_or(())?);
        }
    }
    Ok(found)
}

/// `s` split at every `separator` outside a quoted string; `None` when a quote is not closed.
fn split_unquoted(s: &str, separator: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    if quoted {
        return None;
    }
    parts.push(&s[start..]);
    Some(parts)
}

/// A token as it is, a quoted string without its quotes and escapes.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.contains('"')).then(|| value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:5678`; anything else (`unknown`, `_hidden`) is `None`.
fn node_address(node: &str) -> Option<IpAddr> {
    let address = node
        .parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            node.strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .and_then(|n| n.parse::<Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })?;
    Some(address.to_canonical())
}

/// The client's address, as [`RequestLog`] decided it for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientAddress(IpAddr);

/// The client's address of `req` (see the module's rule).
pub(crate) fn client_address(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ClientAddress>()
        .map_or_else(|| peer_address(req), |client| client.0)
}

fn peer_address(req: &Request) -> IpAddr {
    req.remote_addr()
        .as_socket_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip().to_canonical())
}

/// The outermost middleware: decides each request's client address and logs the request with
/// it (`remote_addr`; `proxy` names the peer when it forwarded the request).
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub trusted: TrustedProxies,
}

impl<E: Endpoint> Middleware<E> for RequestLog {
    type Output = RequestLogEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestLogEndpoint {
            inner,
            trusted: self.trusted.clone(),
        }
    }
}

#[derive(Debug)]
pub struct RequestLogEndpoint<E> {
    inner: E,
    trusted: TrustedProxies,
}

impl<E: Endpoint> Endpoint for RequestLogEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let peer = peer_address(&req);
        let client = self.trusted.client_address(peer, req.headers());
        req.extensions_mut().insert(ClientAddress(client));
        let span = tracing::info_span!(
            "request",
            remote_addr = %client,
            proxy = tracing::field::Empty,
            version = ?req.version(),
            method = %req.method(),
            uri = %req.original_uri(),
        );
        if client != peer {
            span.record("proxy", tracing::field::display(peer));
        }
        async move {
            let started = Instant::now();
            let result = self.inner.call(req).await;
            let duration = started.elapsed();
            match result {
                Ok(response) => {
                    let response = response.into_response();
                    tracing::info!(status = %response.status(), ?duration, "response");
                    Ok(response)
                }
                Err(error) => {
                    tracing::info!(status = %error.status(), %error, ?duration, "error");
                    Err(error)
                }
            }
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;

    fn trusted(raw: &str) -> TrustedProxies {
        TrustedProxies::parse(raw).unwrap()
    }

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn client(proxies: &str, peer: &str, pairs: &[(&'static str, &str)]) -> IpAddr {
        trusted(proxies).client_address(ip(peer), &headers(pairs))
    }

    #[test]
    fn parsing_the_flag() {
        assert!(trusted("").is_empty());
        let list = trusted("10.0.0.0/8, 192.168.1.7 ,fd00::/8,::1");
        assert!(list.contains(ip("10.200.3.4")));
        assert!(list.contains(ip("192.168.1.7")));
        assert!(!list.contains(ip("192.168.1.8")));
        assert!(list.contains(ip("fd12::1")));
        assert!(list.contains(ip("::1")));
        assert!(list.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped counts");
        assert!(!list.contains(ip("11.0.0.1")));
        assert!(trusted("10.1.2.3/8").contains(ip("10.9.9.9")), "host bits");
        assert_eq!(
            list.to_string(),
            "10.0.0.0/8,192.168.1.7/32,fd00::/8,::1/128"
        );
        for bad in [
            "10.0.0.0/33",
            "localhost",
            "10.0.0",
            "10.0.0.0/8;",
            "1.2.3.4:80",
        ] {
            let error = TrustedProxies::parse(&format!("127.0.0.1/32,{bad}")).unwrap_err();
            assert_eq!(error, TrustedProxiesError(bad.to_owned()));
            assert!(error.to_string().contains("CIDR"), "{error}");
        }
    }

    #[test]
    fn untrusted_peers_headers_are_ignored() {
        let spoofed = [
            ("x-forwarded-for", "1.1.1.1"),
            ("forwarded", "for=2.2.2.2"),
            ("x-real-ip", "3.3.3.3"),
        ];
        assert_eq!(client("", "127.0.0.1", &spoofed), ip("127.0.0.1"));
        assert_eq!(client("10.0.0.0/8", "127.0.0.1", &spoofed), ip("127.0.0.1"));
        assert_eq!(
            client("10.0.0.0/8", "::ffff:127.0.0.1", &[]),
            ip("127.0.0.1"),
            "the peer is reported in its IPv4 form"
        );
    }

    #[test]
    fn x_forwarded_for_right_most_untrusted() {
        let proxies = "10.0.0.0/8";
        assert_eq!(
            client(proxies, "10.0.0.1", &[]),
            ip("10.0.0.1"),
            "no header"
        );
        assert_eq!(
            client(proxies, "10.0.0.1", &[("x-forwarded-for", "203.0.113.9")]),
            ip("203.0.113.9")
        );
        // The client wrote the left-most entries itself; the proxies appended the rest.
        assert_eq!(
            client(
                proxies,
                "10.0.0.1",
                &[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.5")]
            ),
            ip("203.0.113.9")
        );
        // Several headers are one list, in order.
        assert_eq!(
            client(
                proxies,
                "10.0.0.1",
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "203.0.113.9,10.0.0.5")
                ]
            ),
            ip("203.0.113.9")
        );
        // Every entry trusted: the left-most.
        assert_eq!(
            client(
                proxies,
                "10.0.0.1",
                &[("x-forwarded-for", "10.0.0.7, 10.0.0.5")]
            ),
            ip("10.0.0.7")
        );
        // Ports and IPv6 forms.
        assert_eq!(
            client(
                proxies,
                "10.0.0.1",
                &[("x-forwarded-for", "203.0.113.9:4711")]
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(proxies, "10.0.0.1", &[("x-forwarded-for", "2001:db8::7")]),
            ip("2001:db8::7")
        );
        assert_eq!(
            client(
                proxies,
                "10.0.0.1",
                &[("x-forwarded-for", "[2001:db8::7]:4711")]
            ),
            ip("2001:db8::7")
        );
        assert_eq!(
            client(
                proxies,
                "10.0.0.1",
                &[("x-forwarded-for", "::ffff:1.2.3.4")]
            ),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn malformed_entries_fall_back_to_the_peer() {
        let proxies = "10.0.0.0/8";
        for value in ["unknown", "203.0.113.9, garbage", "", " , ", "1.2.3.4.5"] {
            assert_eq!(
                client(proxies, "10.0.0.1", &[("x-forwarded-for", value)]),
                ip("10.0.0.1"),
                "{value:?}"
            );
        }
        // Junk left of the client's entry is never reached.
        assert_eq!(
            client(
                proxies,
                "10.0.0.1",
                &[("x-forwarded-for", "garbage, 203.0.113.9")]
            ),
            ip("203.0.113.9")
        );
        let mut map = HeaderMap::new();
        map.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert_eq!(
            trusted(proxies).client_address(ip("10.0.0.1"), &map),
            ip("10.0.0.1"),
            "not text"
        );
    }

    #[test]
    fn forwarded_for_elements() {
        let proxies = "10.0.0.0/8";
        let from = |value: &str| client(proxies, "10.0.0.1", &[("forwarded", value)]);
        assert_eq!(from("for=203.0.113.9"), ip("203.0.113.9"));
        assert_eq!(from("For=\"203.0.113.9:4711\""), ip("203.0.113.9"));
        assert_eq!(
            from("for=\"[2001:db8:cafe::17]:4711\";proto=https;by=10.0.0.1"),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(from("for=\"[2001:db8:cafe::17]\""), ip("2001:db8:cafe::17"));
        assert_eq!(
            from("for=6.6.6.6, for=203.0.113.9;proto=http, for=10.0.0.5"),
            ip("203.0.113.9")
        );
        assert_eq!(
            from("proto=https;host=\"a,b\", for=203.0.113.9"),
            ip("203.0.113.9"),
            "a comma inside quotes, an element without for"
        );
        assert_eq!(from("for=10.0.0.9, for=10.0.0.5"), ip("10.0.0.9"));
        assert_eq!(
            client(
                proxies,
                "10.0.0.1",
                &[
                    ("forwarded", "for=6.6.6.6"),
                    ("forwarded", "for=203.0.113.9")
                ]
            ),
            ip("203.0.113.9"),
            "several headers are one list"
        );
        for bad in [
            "for=unknown",
            "for=_hidden",
            "for=\"1.2.3.4",
            "nonsense",
            "",
        ] {
            assert_eq!(from(bad), ip("10.0.0.1"), "{bad:?}");
        }
    }

    #[test]
    fn x_forwarded_for_wins_over_forwarded() {
        assert_eq!(
            client(
                "10.0.0.0/8",
                "10.0.0.1",
                &[
                    ("forwarded", "for=6.6.6.6"),
                    ("x-forwarded-for", "203.0.113.9")
                ]
            ),
            ip("203.0.113.9")
        );
    }
}
