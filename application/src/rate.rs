//! Post rate limits: a token bucket per connection (burst, then a steady refill).
//!
//! The bucket is governor's GCRA limiter, fed by the injected [`Clock`] so tests can move time.

use std::num::NonZeroU32;
use std::time::Duration;

use banter_domain::ports::Clock;
use governor::{Quota, RateLimiter, clock::Reference, middleware::NoOpMiddleware};

/// How many posts may come at once (`burst`) and how fast the allowance refills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: NonZeroU32,
    pub per_second: NonZeroU32,
}

impl RateLimit {
    /// The contract's default: a burst of 20, refilled at 2 per second.
    pub const DEFAULT: RateLimit = RateLimit {
        burst: NonZeroU32::MIN.saturating_add(19),
        per_second: NonZeroU32::MIN.saturating_add(1),
    };

    pub fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// Adapts a [`Clock`] port to governor's clock.
#[derive(Debug, Clone)]
pub(crate) struct GovernorClock<C>(pub C);

impl<C: Clock> governor::clock::Clock for GovernorClock<C> {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.monotonic()
    }
}

type DirectLimiter<C> = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    GovernorClock<C>,
    NoOpMiddleware<Duration>,
>;

/// One connection's bucket; `None` inside when limits are off.
pub(crate) struct PostBucket<C: Clock> {
    limiter: Option<DirectLimiter<C>>,
    clock: GovernorClock<C>,
}

impl<C: Clock> std::fmt::Debug for PostBucket<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostBucket")
            .field("limited", &self.limiter.is_some())
            .finish()
    }
}

impl<C: Clock> PostBucket<C> {
    pub fn new(limit: Option<RateLimit>, clock: C) -> Self {
        let clock = GovernorClock(clock);
        Self {
            limiter: limit.map(|l| RateLimiter::direct_with_clock(l.quota(), clock.clone())),
            clock,
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let now = governor::clock::Clock::now(&self.clock);
            Duration::from(not_until.earliest_possible().duration_since(now))
        })
    }
}
