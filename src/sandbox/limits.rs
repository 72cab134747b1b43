//! HubSpot's two request budgets: a rolling burst window and a daily allowance.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::errors::Policy;

/// HubSpot's burst window is ten seconds; tests shorten it through `/_sandbox/config`.
pub(crate) const DEFAULT_WINDOW_MS: u64 = 10_000;

/// The limits in force; `0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Limits {
    pub burst_per_10s: u32,
    pub daily_limit: u64,
    /// Length of the rolling window; the name keeps HubSpot's unit even when shortened.
    pub window_ms: u64,
}

/// A partial update of [`Limits`], as posted to `/_sandbox/config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsPatch {
    pub burst_per_10s: Option<u32>,
    pub daily_limit: Option<u64>,
    pub window_ms: Option<u64>,
}

impl Limits {
    pub(crate) fn apply(&mut self, patch: &LimitsPatch) -> Result<(), String> {
        if patch.window_ms == Some(0) {
            return Err("window_ms must be at least 1".to_owned());
        }
        if let Some(burst) = patch.burst_per_10s {
            self.burst_per_10s = burst;
        }
        if let Some(daily) = patch.daily_limit {
            self.daily_limit = daily;
        }
        if let Some(window) = patch.window_ms {
            self.window_ms = window;
        }
        Ok(())
    }
}

/// What is left of each budget after an admitted request; `None` for an unlimited budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub burst: Option<(u32, u32)>,
    pub daily: Option<(u64, u64)>,
    pub interval_ms: u64,
}

/// The limiter's verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Admitted(Quota),
    Throttled {
        policy: Policy,
        retry_after_secs: u64,
    },
}

/// Counts admitted requests; throttled ones never enter the window, as with HubSpot.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limits: Limits,
    /// The policy a spent burst budget is reported under.
    burst_policy: Policy,
    recent: VecDeque<Instant>,
    day: Option<NaiveDate>,
    used_today: u64,
}

impl RateLimiter {
    pub(crate) fn new(limits: Limits) -> Self {
        RateLimiter {
            limits,
            burst_policy: Policy::TenSecondlyRolling,
            recent: VecDeque::new(),
            day: None,
            used_today: 0,
        }
    }

    /// The search endpoints' limiter: `per_second` requests a second, no daily budget.
    pub(crate) fn search(per_second: u32) -> Self {
        RateLimiter {
            burst_policy: Policy::Secondly,
            ..RateLimiter::new(Limits {
                burst_per_10s: per_second,
                daily_limit: 0,
                window_ms: 1_000,
            })
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Forgets every counted request; the limits stay.
    pub(crate) fn clear(&mut self) {
        self.recent.clear();
        self.day = None;
        self.used_today = 0;
    }

    /// Admits and counts one request at `now`, or says which budget is spent and for how long.
    pub(crate) fn admit(&mut self, now: Instant, wall: DateTime<Utc>) -> Admission {
        let today = wall.date_naive();
        // The daily budget resets at midnight UTC (HubSpot uses the account's time zone).
        if self.day != Some(today) {
            self.day = Some(today);
            self.used_today = 0;
        }
        let window = Duration::from_millis(self.limits.window_ms);
        while self
            .recent
            .front()
            .is_some_and(|&oldest| oldest + window <= now)
        {
            self.recent.pop_front();
        }

        let daily = self.limits.daily_limit;
        if daily > 0 && self.used_today >= daily {
            return Admission::Throttled {
                policy: Policy::Daily,
                retry_after_secs: secs_until_midnight(wall, today),
            };
        }
        let burst = self.limits.burst_per_10s as usize;
        if burst > 0 && self.recent.len() >= burst {
            // The limit may have been lowered below the count, so more than the oldest may need to leave.
            let freeing = self.recent[self.recent.len() - burst];
            let wait = (freeing + window).saturating_duration_since(now);
            return Admission::Throttled {
                policy: self.burst_policy,
                retry_after_secs: ceil_secs(wait),
            };
        }

        if burst > 0 {
            self.recent.push_back(now);
        }
        self.used_today += 1;
        Admission::Admitted(Quota {
            burst: (burst > 0).then(|| {
                let used = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
                (
                    self.limits.burst_per_10s,
                    self.limits.burst_per_10s.saturating_sub(used),
                )
            }),
            daily: (daily > 0).then(|| (daily, daily.saturating_sub(self.used_today))),
            interval_ms: self.limits.window_ms,
        })
    }
}

/// Whole seconds, rounded up, never below one: a client told "0" would retry at once.
fn ceil_secs(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

fn secs_until_midnight(wall: DateTime<Utc>, today: NaiveDate) -> u64 {
    let midnight = today
        .succ_opt()
        .and_then(|tomorrow| tomorrow.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc());
    match midnight.and_then(|m| (m - wall).to_std().ok()) {
        Some(wait) => ceil_secs(wait),
        None => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: u32, daily: u64) -> RateLimiter {
        RateLimiter::new(Limits {
            burst_per_10s: burst,
            daily_limit: daily,
            window_ms: DEFAULT_WINDOW_MS,
        })
    }

    fn wall() -> DateTime<Utc> {
        "2026-03-02T23:59:30Z".parse().expect("valid timestamp")
    }

    #[test]
    fn burst_window_rolls() {
        let mut limiter = limiter(2, 0);
        let t0 = Instant::now();
        let first = limiter.admit(t0, wall());
        assert_eq!(
            first,
            Admission::Admitted(Quota {
                burst: Some((2, 1)),
                daily: None,
                interval_ms: 10_000
            })
        );
        assert!(matches!(
            limiter.admit(t0 + Duration::from_secs(3), wall()),
            Admission::Admitted(_)
        ));
        // The oldest request leaves the window 10 s after t0: 6.5 s from now, reported as 7.
        assert_eq!(
            limiter.admit(t0 + Duration::from_millis(3500), wall()),
            Admission::Throttled {
                policy: Policy::TenSecondlyRolling,
                retry_after_secs: 7
            }
        );
        assert!(matches!(
            limiter.admit(t0 + Duration::from_secs(10), wall()),
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn throttled_requests_do_not_count() {
        let mut limiter = limiter(1, 0);
        let t0 = Instant::now();
        assert!(matches!(limiter.admit(t0, wall()), Admission::Admitted(_)));
        for ms in 1..50 {
            let at = t0 + Duration::from_millis(ms * 100);
            assert!(matches!(
                limiter.admit(at, wall()),
                Admission::Throttled { .. }
            ));
        }
        assert!(matches!(
            limiter.admit(t0 + Duration::from_secs(10), wall()),
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn daily_budget_waits_for_midnight_utc() {
        let mut limiter = limiter(0, 2);
        let t0 = Instant::now();
        assert!(matches!(limiter.admit(t0, wall()), Admission::Admitted(_)));
        let second = limiter.admit(t0, wall());
        assert_eq!(
            second,
            Admission::Admitted(Quota {
                burst: None,
                daily: Some((2, 0)),
                interval_ms: 10_000
            })
        );
        assert_eq!(
            limiter.admit(t0, wall()),
            Admission::Throttled {
                policy: Policy::Daily,
                retry_after_secs: 30
            }
        );
        let next_day = "2026-03-03T00:00:01Z".parse().expect("valid timestamp");
        assert!(matches!(
            limiter.admit(t0, next_day),
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn lowering_the_burst_waits_for_enough_requests_to_leave() {
        let mut limiter = limiter(3, 0);
        let t0 = Instant::now();
        for s in 0..3 {
            limiter.admit(t0 + Duration::from_secs(s), wall());
        }
        limiter.set_limits(Limits {
            burst_per_10s: 1,
            ..limiter.limits()
        });
        // All three must leave for one to fit: the newest leaves at t0 + 12 s.
        assert_eq!(
            limiter.admit(t0 + Duration::from_secs(3), wall()),
            Admission::Throttled {
                policy: Policy::TenSecondlyRolling,
                retry_after_secs: 9
            }
        );
    }
}
