//! One CRM account's request budget, shared by every sync (and connector file) that uses it.
//!
//! HubSpot limits an account in a rolling window (e.g. 100 requests per 10 s) and per day,
//! and search separately. Requests are spaced evenly at the window's rate, so a rolling
//! window is never overrun by a burst and the whole budget is still used. The CRM's
//! `X-HubSpot-RateLimit-*` headers correct the budget as answers arrive: a different
//! limit is adopted, a window that others are draining slows us down, and an exhausted
//! day pauses the account until its midnight.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use tokio::time::Instant;

use crate::project::RateBudget;

/// A 1 % margin keeps clock skew between us and the CRM from tipping a window over.
const MARGIN: f64 = 1.01;

/// Why a request may not go out at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyPause {
    /// When the account's day ends.
    pub until: DateTime<Utc>,
}

/// Evenly spaced slots, and never more than `limit` of them in any `per`: each request
/// takes the next free one.
#[derive(Debug)]
struct Pace {
    spacing: Duration,
    next: Instant,
    /// The window the CRM counts in, and how many of our requests it leaves room for.
    per: Duration,
    limit: usize,
    /// Start times of our requests in the last window, oldest first.
    sent: VecDeque<Instant>,
}

impl Pace {
    fn new(requests: u32, per: Duration) -> Pace {
        Pace {
            spacing: spacing(requests, per),
            next: Instant::now(),
            per,
            limit: requests.max(1) as usize,
            sent: VecDeque::new(),
        }
    }

    /// The CRM counts a request when it arrives, a little after we send it: our window is
    /// a little longer than its, so a request that left it has left the CRM's too.
    fn window(&self) -> Duration {
        self.per.mul_f64(MARGIN) + Duration::from_millis(20)
    }

    /// Takes a slot and says when it starts.
    fn take(&mut self) -> Instant {
        let now = Instant::now();
        let mut slot = self.next.max(now);
        let window = self.window();
        // Forget only what has left the window by now: a slot is often taken ahead (requests
        // in flight), and requests that leave the window only by that future slot still count
        // for `recent`, which the header correction compares with the CRM's count.
        while self.sent.front().is_some_and(|t| *t + window <= now) {
            self.sent.pop_front();
        }
        // Slots are taken in order, so those still in the window at `slot` are a suffix.
        let in_window = self.sent.len() - self.sent.partition_point(|t| *t + window <= slot);
        if in_window >= self.limit {
            // The window is full: wait for the request that frees a place to age out.
            let freeing = self.sent[self.sent.len() - self.limit];
            slot = slot.max(freeing + window);
        }
        self.next = slot + self.spacing;
        self.sent.push_back(slot);
        slot
    }

    /// Our requests in the window that ends now.
    fn recent(&self) -> usize {
        let now = Instant::now();
        let window = self.window();
        self.sent
            .iter()
            .filter(|t| **t <= now && **t + window > now)
            .count()
    }

    /// No slot starts before `until`.
    fn hold(&mut self, until: Instant) {
        self.next = self.next.max(until);
    }
}

fn spacing(requests: u32, per: Duration) -> Duration {
    per.mul_f64(MARGIN / f64::from(requests.max(1)))
}

#[derive(Debug)]
struct Daily {
    limit: u64,
    used: u64,
    day: NaiveDate,
    paused_until: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Window {
    requests: u32,
    per: Duration,
}

/// The request budget of one account.
#[derive(Debug)]
pub struct Budget {
    pace: Mutex<Pace>,
    search: Mutex<Pace>,
    window: Mutex<Window>,
    daily: Mutex<Daily>,
    tz: chrono_tz::Tz,
    now: fn() -> DateTime<Utc>,
}

impl Budget {
    pub fn new(b: RateBudget, tz: chrono_tz::Tz) -> Budget {
        Budget::with_clock(b, tz, Utc::now)
    }

    /// `now` tells the wall-clock time (for the daily reset); tests pass a fixed one.
    pub fn with_clock(b: RateBudget, tz: chrono_tz::Tz, now: fn() -> DateTime<Utc>) -> Budget {
        let per = Duration::from_secs(u64::from(b.per_secs.max(1)));
        Budget {
            pace: Mutex::new(Pace::new(b.requests, per)),
            search: Mutex::new(Pace::new(b.search_per_second, Duration::from_secs(1))),
            window: Mutex::new(Window {
                requests: b.requests,
                per,
            }),
            daily: Mutex::new(Daily {
                limit: b.daily,
                used: 0,
                day: now().with_timezone(&tz).date_naive(),
                paused_until: None,
            }),
            tz,
            now,
        }
    }

    /// Waits for the next slot (a search slot too, for `search`) and counts the request
    /// against the day; refuses at once while the account is paused for the day.
    pub async fn acquire(&self, search: bool) -> Result<(), DailyPause> {
        self.count_today()?;
        let slot = self.pace.lock().expect("budget lock").take();
        let search_slot = search.then(|| self.search.lock().expect("budget lock").take());
        tokio::time::sleep_until(slot.max(search_slot.unwrap_or(slot))).await;
        Ok(())
    }

    fn count_today(&self) -> Result<(), DailyPause> {
        let now = (self.now)();
        let mut d = self.daily.lock().expect("budget lock");
        let today = now.with_timezone(&self.tz).date_naive();
        if today != d.day {
            d.day = today;
            d.used = 0;
        }
        if let Some(until) = d.paused_until {
            if now < until {
                return Err(DailyPause { until });
            }
            d.paused_until = None;
        }
        if d.limit > 0 && d.used >= d.limit {
            let until = self.next_midnight(now);
            d.paused_until = Some(until);
            return Err(DailyPause { until });
        }
        d.used += 1;
        Ok(())
    }

    /// The start of the account's next day.
    fn next_midnight(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let local = now.with_timezone(&self.tz).date_naive();
        let next = local.succ_opt().unwrap_or(local).and_hms_opt(0, 0, 0);
        next.and_then(|n| self.tz.from_local_datetime(&n).earliest())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now + chrono::Duration::hours(24))
    }

    /// The CRM said the day's budget is spent: pause until the account's midnight.
    pub fn pause_for_the_day(&self) -> DailyPause {
        let now = (self.now)();
        let until = self.next_midnight(now);
        self.daily.lock().expect("budget lock").paused_until = Some(until);
        tracing::warn!(%until, "daily API limit reached: this account's syncs are paused until its midnight");
        DailyPause { until }
    }

    /// When the account is paused for the day, until when.
    pub fn paused_until(&self) -> Option<DateTime<Utc>> {
        let d = self.daily.lock().expect("budget lock");
        d.paused_until.filter(|u| (self.now)() < *u)
    }

    /// Holds every request (not only the one that met it) until `delay` has passed:
    /// a 429 means the account's window is full for everyone.
    pub fn hold(&self, delay: Duration) {
        self.pace
            .lock()
            .expect("budget lock")
            .hold(Instant::now() + delay);
    }

    /// Corrects the budget from the CRM's rate-limit headers.
    pub fn observe(&self, headers: &reqwest::header::HeaderMap) {
        let num = |name: &str| -> Option<u64> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(max), Some(interval_ms)) = (
            num("x-hubspot-ratelimit-max"),
            num("x-hubspot-ratelimit-interval-milliseconds"),
        ) && max > 0
            && interval_ms > 0
        {
            let per = Duration::from_millis(interval_ms);
            let max = u32::try_from(max).unwrap_or(u32::MAX);
            let mut w = self.window.lock().expect("budget lock");
            let mut pace = self.pace.lock().expect("budget lock");
            if w.requests != max || w.per != per {
                tracing::info!(
                    configured = w.requests,
                    configured_ms = w.per.as_millis() as u64,
                    reported = max,
                    reported_ms = interval_ms,
                    "the CRM reports a different rate limit for this account; pacing to it"
                );
                w.requests = max;
                w.per = per;
                pace.spacing = spacing(max, per);
                pace.per = per;
            }
            // What the window holds beyond our own requests is someone else's (another
            // app, a second handoff): leave it to them.
            if let Some(remaining) = num("x-hubspot-ratelimit-remaining") {
                let ours = pace.recent() as u64;
                let others = u64::from(max)
                    .saturating_sub(remaining)
                    .saturating_sub(ours);
                pace.limit = (u64::from(max).saturating_sub(others)).max(1) as usize;
            }
        }
        if let (Some(limit), Some(remaining)) = (
            num("x-hubspot-ratelimit-daily"),
            num("x-hubspot-ratelimit-daily-remaining"),
        ) {
            let mut d = self.daily.lock().expect("budget lock");
            d.limit = limit;
            d.used = limit.saturating_sub(remaining);
        }
    }

    /// The requests per window the budget paces to now.
    pub fn window(&self) -> (u32, Duration) {
        let w = self.window.lock().expect("budget lock");
        (w.requests, w.per)
    }
}

/// Budgets by account, so connector files that reach the same account share one.
pub fn for_account(account: &str, b: RateBudget, tz: chrono_tz::Tz) -> Arc<Budget> {
    static ACCOUNTS: OnceLock<Mutex<HashMap<String, Weak<Budget>>>> = OnceLock::new();
    let mut accounts = ACCOUNTS
        .get_or_init(Mutex::default)
        .lock()
        .expect("accounts lock");
    accounts.retain(|_, w| w.strong_count() > 0);
    if let Some(existing) = accounts.get(account).and_then(Weak::upgrade) {
        return existing;
    }
    let budget = Arc::new(Budget::new(b, tz));
    accounts.insert(account.to_string(), Arc::downgrade(&budget));
    budget
}

/// An account's identity without its secret: the API's address and a hash of the token.
pub fn account_key(base_url: &str, token: &str) -> String {
    let h = blake3::hash(token.as_bytes());
    format!("{base_url}#{}", &h.to_hex()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn budget(requests: u32, per_secs: u32, daily: u64) -> Budget {
        Budget::with_clock(
            RateBudget {
                requests,
                per_secs,
                daily,
                search_per_second: 2,
            },
            chrono_tz::Tz::UTC,
            || Utc.with_ymd_and_hms(2026, 11, 21, 15, 30, 0).unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_evenly_over_the_window() {
        let b = budget(10, 1, 0);
        let start = Instant::now();
        for _ in 0..21 {
            b.acquire(false).await.unwrap();
        }
        // 21 requests: the first at once, then one every 101 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(2020), "{took:?}");
        assert!(took < Duration::from_millis(2100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn slots_taken_ahead_do_not_hide_our_requests_still_in_the_window() {
        // 10 per second: ten slots (0 ms … 909 ms), then, just after the tenth has started,
        // three more taken ahead, as requests in flight do at a window boundary.
        let mut pace = Pace::new(10, Duration::from_secs(1));
        let mut last = Instant::now();
        for _ in 0..10 {
            last = pace.take();
        }
        tokio::time::advance(last - Instant::now() + Duration::from_millis(1)).await;
        let ahead: Vec<Instant> = (0..3).map(|_| pace.take()).collect();
        // All ten are still in the window that ends now, as the CRM counts them: had the
        // slots taken ahead dropped the oldest, the header correction would take the
        // difference for another app's use and slow down for nothing.
        assert_eq!(pace.recent(), 10);
        // And the window rule still holds: no 11 slots within one window.
        let window = pace.window();
        let mut all: Vec<Instant> = pace.sent.iter().copied().collect();
        all.sort();
        assert!(all.windows(11).all(|w| w[10] >= w[0] + window), "{ahead:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn search_has_its_own_lower_rate() {
        let b = budget(100, 1, 0);
        let start = Instant::now();
        for _ in 0..5 {
            b.acquire(true).await.unwrap();
        }
        // 2 searches a second: 4 gaps of 505 ms, though the main budget allows 100/s.
        assert!(start.elapsed() >= Duration::from_millis(2020));
        let start = Instant::now();
        b.acquire(false).await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn headers_correct_the_rate_and_a_drained_window_slows_down() {
        let b = budget(100, 10, 0);
        let mut h = HeaderMap::new();
        h.insert("x-hubspot-ratelimit-max", HeaderValue::from_static("190"));
        h.insert(
            "x-hubspot-ratelimit-interval-milliseconds",
            HeaderValue::from_static("10000"),
        );
        h.insert(
            "x-hubspot-ratelimit-remaining",
            HeaderValue::from_static("150"),
        );
        b.observe(&h);
        assert_eq!(b.window(), (190, Duration::from_secs(10)));
        b.acquire(false).await.unwrap();
        let start = Instant::now();
        b.acquire(false).await.unwrap();
        let gap = start.elapsed();
        assert!(
            gap >= Duration::from_millis(52) && gap < Duration::from_millis(60),
            "{gap:?}"
        );

        // Two of ours are in the window, yet 0 of 190 are left: others use 188, so the
        // next request waits until ours age out of the window.
        h.insert(
            "x-hubspot-ratelimit-remaining",
            HeaderValue::from_static("0"),
        );
        b.observe(&h);
        let start = Instant::now();
        b.acquire(false).await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // Once others leave room again, the full rate is back.
        h.insert(
            "x-hubspot-ratelimit-remaining",
            HeaderValue::from_static("189"),
        );
        b.observe(&h);
        let start = Instant::now();
        b.acquire(false).await.unwrap();
        assert!(
            start.elapsed() < Duration::from_millis(60),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_sent_before_the_limit_was_known_ages_out_first() {
        let b = budget(1000, 1, 0);
        for _ in 0..20 {
            b.acquire(false).await.unwrap();
        }
        // The CRM says 20 per second, all used (by those 20).
        let mut h = HeaderMap::new();
        h.insert("x-hubspot-ratelimit-max", HeaderValue::from_static("20"));
        h.insert(
            "x-hubspot-ratelimit-interval-milliseconds",
            HeaderValue::from_static("1000"),
        );
        h.insert(
            "x-hubspot-ratelimit-remaining",
            HeaderValue::from_static("0"),
        );
        b.observe(&h);
        let start = Instant::now();
        b.acquire(false).await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(990),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_daily_limit_pauses_until_the_accounts_midnight() {
        let b = Budget::with_clock(
            RateBudget {
                requests: 1000,
                per_secs: 1,
                daily: 3,
                search_per_second: 5,
            },
            chrono_tz::Tz::America__New_York,
            || Utc.with_ymd_and_hms(2026, 11, 21, 15, 30, 0).unwrap(),
        );
        for _ in 0..3 {
            b.acquire(false).await.unwrap();
        }
        let pause = b.acquire(false).await.unwrap_err();
        // Midnight in New York (UTC-5 in November).
        assert_eq!(
            pause.until,
            Utc.with_ymd_and_hms(2026, 11, 22, 5, 0, 0).unwrap()
        );
        assert_eq!(b.paused_until(), Some(pause.until));
    }

    #[tokio::test(start_paused = true)]
    async fn daily_headers_and_a_daily_429_pause_the_account() {
        let b = budget(1000, 1, 0);
        let mut h = HeaderMap::new();
        h.insert("x-hubspot-ratelimit-daily", HeaderValue::from_static("500"));
        h.insert(
            "x-hubspot-ratelimit-daily-remaining",
            HeaderValue::from_static("1"),
        );
        b.observe(&h);
        b.acquire(false).await.unwrap();
        assert!(b.acquire(false).await.is_err());

        let b = budget(1000, 1, 0);
        assert_eq!(b.paused_until(), None);
        let p = b.pause_for_the_day();
        assert_eq!(
            p.until,
            Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap()
        );
        assert_eq!(b.acquire(false).await, Err(p));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_delays_everyone() {
        let b = budget(1000, 1, 0);
        b.hold(Duration::from_secs(2));
        let start = Instant::now();
        b.acquire(false).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[test]
    fn accounts_share_a_budget_and_the_key_hides_the_token() {
        let rb = crate::project::HUBSPOT_TIERS[0].1;
        let k = account_key("http://x", "secret-token");
        assert!(!k.contains("secret"));
        let a = for_account(&k, rb, chrono_tz::Tz::UTC);
        let b = for_account(&k, rb, chrono_tz::Tz::UTC);
        assert!(Arc::ptr_eq(&a, &b));
        let c = for_account(&account_key("http://x", "other"), rb, chrono_tz::Tz::UTC);
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
