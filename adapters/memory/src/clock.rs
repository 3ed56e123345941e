//! The real clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use banter_domain::ports::Clock;

/// Monotonic time from [`Instant`], sleeps from tokio.
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
    }
}
