//! The real clock.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use banter_domain::Timestamp;
use banter_domain::ports::Clock;

/// Wall time from the system, monotonic time from [`Instant`], sleeps from tokio.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Arc<Instant>,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            origin: Arc::new(Instant::now()),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        // A system clock outside years 0000-9999 is broken; the epoch is the least bad answer.
        Timestamp::from_unix_millis(millis).unwrap_or(Timestamp::EPOCH)
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn monotonic_time_advances_with_sleep() {
        let clock = SystemClock::default();
        let before = clock.monotonic();
        clock.sleep(Duration::from_millis(20)).await;
        assert!(clock.monotonic() - before >= Duration::from_millis(20));
        assert!(clock.now().unix_millis() > 1_700_000_000_000);
    }
}
