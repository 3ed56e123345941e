//! Admission: which origins may open WebSockets, how many connections fit, how fast one
//! address may post over REST.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use banter_application::RateLimit;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, RateLimiter};

/// An origin as `scheme://host[:port]`, lowercased, without the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowedOrigin {
    scheme: String,
    authority: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an origin of the form scheme://host[:port]")]
pub struct OriginParseError(pub String);

impl AllowedOrigin {
    pub fn parse(raw: &str) -> Result<Self, OriginParseError> {
        let invalid = || OriginParseError(raw.to_owned());
        let (scheme, rest) = raw.trim().split_once("://").ok_or_else(invalid)?;
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.strip_suffix('/').unwrap_or(rest).to_ascii_lowercase();
        if scheme.is_empty()
            || authority.is_empty()
            || authority.contains(['/', '?', '#', '@', ' '])
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(invalid());
        }
        let authority = strip_default_port(&scheme, &authority).to_owned();
        Ok(Self { scheme, authority })
    }
}

fn strip_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return authority,
    };
    authority.strip_suffix(default).unwrap_or(authority)
}

/// Whether a WebSocket handshake's `Origin` may connect: absent (not a browser), same host and
/// port as the `Host` header, or listed. `Origin: null` never is.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[AllowedOrigin]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Ok(origin) = AllowedOrigin::parse(origin) else {
        // Covers `null` and anything that is not scheme://host[:port].
        return false;
    };
    let same_host = host.is_some_and(|host| {
        let host = host.to_ascii_lowercase();
        strip_default_port(&origin.scheme, &host) == origin.authority
    });
    same_host || allowed.contains(&origin)
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    /// The server holds its maximum number of connections.
    OverCapacity,
    /// This address holds its maximum number of connections.
    TooManyFromAddress,
}

/// Counts open WebSocket connections, in total and per client address.
#[derive(Debug)]
pub struct ConnectionSlots {
    max_total: usize,
    max_per_address: usize,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    emptied: tokio::sync::Notify,
}

impl ConnectionSlots {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            emptied: tokio::sync::Notify::new(),
        })
    }

    fn addresses(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for `address`; it is given back when the guard drops.
    pub fn acquire(self: &Arc<Self>, address: IpAddr) -> Result<SlotGuard, SlotRefusal> {
        let mut addresses = self.addresses();
        if self.total.load(Ordering::SeqCst) >= self.max_total {
            return Err(SlotRefusal::OverCapacity);
        }
        let held = addresses.entry(address).or_insert(0);
        if *held >= self.max_per_address {
            return Err(SlotRefusal::TooManyFromAddress);
        }
        *held += 1;
        let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!("banter_connections").set(total as f64);
        Ok(SlotGuard {
            slots: Arc::clone(self),
            address,
        })
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Waits until every connection closed, or `limit` passed; returns how many remain.
    pub async fn wait_until_empty(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.emptied.notified();
            if self.open() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.open();
            }
        }
    }
}

/// A held connection slot.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Arc<ConnectionSlots>,
    address: IpAddr,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut addresses = self.slots.addresses();
        if let Some(held) = addresses.get_mut(&self.address) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                addresses.remove(&self.address);
            }
        }
        let total = self
            .slots
            .total
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        drop(addresses);
        metrics::gauge!("banter_connections").set(total as f64);
        if total == 0 {
            self.slots.emptied.notify_waiters();
        }
    }
}

/// The per-address token bucket for REST posts.
#[derive(Debug)]
pub struct AddressLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl AddressLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limiter: RateLimiter::keyed(limit.quota()),
        }
    }

    /// Takes a token for `address`, or says how long until one is available.
    pub fn take(&self, address: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&address)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets addresses whose bucket is full again, so the map does not grow without bound.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn allowed(list: &[&str]) -> Vec<AllowedOrigin> {
        list.iter()
            .map(|o| AllowedOrigin::parse(o).unwrap())
            .collect()
    }

    #[test]
    fn origins() {
        let none = allowed(&[]);
        assert!(
            origin_allowed(None, Some("localhost:8080"), &none),
            "not a browser"
        );
        assert!(origin_allowed(
            Some("http://localhost:8080"),
            Some("localhost:8080"),
            &none
        ));
        assert!(origin_allowed(
            Some("http://LOCALHOST:8080"),
            Some("localhost:8080"),
            &none
        ));
        assert!(origin_allowed(
            Some("http://example.com"),
            Some("example.com:80"),
            &none
        ));
        assert!(origin_allowed(
            Some("https://example.com"),
            Some("example.com"),
            &none
        ));
        assert!(
            !origin_allowed(Some("http://localhost:9999"), Some("localhost:8080"), &none),
            "other port"
        );
        assert!(!origin_allowed(
            Some("http://evil.example"),
            Some("localhost:8080"),
            &none
        ));
        assert!(!origin_allowed(Some("null"), Some("localhost:8080"), &none));
        assert!(!origin_allowed(Some("http://localhost:8080"), None, &none));
        let list = allowed(&["https://chat.example.com", "http://127.0.0.1:3000"]);
        assert!(origin_allowed(
            Some("https://chat.example.com"),
            Some("internal:8080"),
            &list
        ));
        assert!(origin_allowed(
            Some("https://chat.example.com:443"),
            Some("internal:8080"),
            &list
        ));
        assert!(origin_allowed(
            Some("http://127.0.0.1:3000"),
            Some("internal:8080"),
            &list
        ));
        assert!(
            !origin_allowed(
                Some("http://chat.example.com"),
                Some("internal:8080"),
                &list
            ),
            "scheme counts"
        );
        assert!(!origin_allowed(Some("null"), Some("internal:8080"), &list));
        assert!(AllowedOrigin::parse("example.com").is_err());
        assert!(AllowedOrigin::parse("http://a/b").is_err());
    }

    #[test]
    fn slots_cap_per_address_and_in_total() {
        let slots = ConnectionSlots::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = slots.acquire(a).unwrap();
        let _second = slots.acquire(a).unwrap();
        assert_eq!(
            slots.acquire(a).unwrap_err(),
            SlotRefusal::TooManyFromAddress
        );
        let _third = slots.acquire(b).unwrap();
        assert_eq!(slots.acquire(b).unwrap_err(), SlotRefusal::OverCapacity);
        drop(first);
        assert_eq!(slots.open(), 2);
        assert!(slots.acquire(a).is_ok(), "a freed slot is reusable");
    }

    #[tokio::test]
    async fn waiting_for_connections_to_close() {
        let slots = ConnectionSlots::new(10, 10);
        let guard = slots.acquire("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(slots.wait_until_empty(Duration::from_millis(10)).await, 1);
        let waiter = {
            let slots = Arc::clone(&slots);
            tokio::spawn(async move { slots.wait_until_empty(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(guard);
        assert_eq!(waiter.await.unwrap(), 0);
    }

    fn quota_of(burst: u32, per_second: u32) -> RateLimit {
        RateLimit {
            burst: NonZeroU32::new(burst).unwrap(),
            per_second: NonZeroU32::new(per_second).unwrap(),
        }
    }

    #[test]
    fn address_limiter_is_a_token_bucket_per_address() {
        let limiter = AddressLimiter::new(quota_of(2, 1));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limiter.take(a).is_ok());
        assert!(limiter.take(a).is_ok());
        let wait = limiter.take(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(
            limiter.take("10.0.0.2".parse().unwrap()).is_ok(),
            "another address has its own bucket"
        );
    }
}
