//! When a sync is due: cron expressions (seconds first, in the project's time zone) or plain intervals.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed `schedule = "..."`: pure, so the project loader can validate it.
#[derive(Clone)]
pub struct Schedule {
    source: String,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Cron(Box<cron::Schedule>),
    /// Aligned to the Unix epoch, so "every 30s" fires at :00 and :30 whatever the start time.
    Every(Duration),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.source)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

// Two schedules are the same when they were written the same: a reload compares them.
impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// `"@every 30s"` (units `s`, `m`, `h`, `d`, combinable: `"@every 1h30m"`), or a cron
    /// expression with the seconds field first (`"0 */5 * * * *"`, `"@daily"`).
    /// The error completes a sentence that starts with the schedule: `"..." is not a valid ...`.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let source = text.trim().to_string();
        let kind = match source.strip_prefix("@every") {
            Some(rest) => Kind::Every(parse_interval(rest.trim())?),
            None => match cron::Schedule::from_str(&source) {
                Ok(c) => Kind::Cron(Box::new(c)),
                Err(e) => {
                    let why = e.to_string();
                    let why = why.lines().last().unwrap_or_default().trim().to_string();
                    return Err(format!(
                        "is not a valid cron expression (seconds field first, e.g. \"0 */5 * * * *\", or \"@every 30s\"): {why}"
                    ));
                }
            },
        };
        Ok(Schedule { source, kind })
    }

    /// The first tick strictly after `after`; cron fields are read in `tz`.
    /// `None` when a cron expression has no future tick (e.g. a past year).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron(c) => c
                .after(&after.with_timezone(&tz))
                .next()
                .map(|t| t.with_timezone(&Utc)),
            Kind::Every(every) => {
                let step = i128::try_from(every.as_nanos()).ok()?.max(1);
                let now = i128::from(after.timestamp_nanos_opt()?);
                let next = (now.div_euclid(step) + 1) * step;
                let next = i64::try_from(next).ok()?;
                Some(Utc.timestamp_nanos(next))
            }
        }
    }
}

/// `30s`, `5m`, `1h30m`, `1d`: at least one second.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let bad = || {
        "is not a valid interval: write a number and a unit (s, m, h, d), e.g. \"@every 30s\" or \"@every 1h30m\"".to_string()
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    if total == 0 {
        return Err("is not a valid interval: it must be at least one second".into());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_ticks_are_strictly_after() {
        let s = Schedule::parse("0 */5 * * * *").unwrap();
        let t = at("2025-03-01T10:00:00Z");
        assert_eq!(s.next_after(t, Tz::UTC), Some(at("2025-03-01T10:05:00Z")));
        assert_eq!(
            s.next_after(at("2025-03-01T10:04:59Z"), Tz::UTC),
            Some(at("2025-03-01T10:05:00Z"))
        );
    }

    #[test]
    fn cron_fields_are_read_in_the_project_time_zone() {
        // 09:00 in Berlin is 08:00 UTC in winter (CET) and 07:00 UTC in summer (CEST).
        let s = Schedule::parse("0 0 9 * * *").unwrap();
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(
            s.next_after(at("2025-01-15T00:00:00Z"), berlin),
            Some(at("2025-01-15T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2025-07-15T00:00:00Z"), berlin),
            Some(at("2025-07-15T07:00:00Z"))
        );
    }

    #[test]
    fn intervals_are_aligned_to_the_epoch() {
        let s = Schedule::parse("@every 30s").unwrap();
        assert_eq!(
            s.next_after(at("2025-03-01T10:00:00Z"), Tz::UTC),
            Some(at("2025-03-01T10:00:30Z"))
        );
        assert_eq!(
            s.next_after(at("2025-03-01T10:00:12.5Z"), Tz::UTC),
            Some(at("2025-03-01T10:00:30Z"))
        );
        let s = Schedule::parse("@every 1h30m").unwrap();
        assert_eq!(
            s.next_after(at("2025-03-01T00:00:00Z"), Tz::UTC),
            Some(at("2025-03-01T01:30:00Z"))
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        for bad in ["@every", "@every 10", "@every 5x", "@every 0s", "@every s"] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.starts_with("is not a valid interval"), "{bad}: {e}");
        }
        let e = Schedule::parse("every tuesday").unwrap_err();
        assert!(e.starts_with("is not a valid cron expression"), "{e}");
        assert!(Schedule::parse("@daily").is_ok());
    }

    #[test]
    fn schedules_compare_by_their_text() {
        assert_eq!(
            Schedule::parse("@every 30s").unwrap(),
            Schedule::parse(" @every 30s ").unwrap()
        );
        assert_ne!(
            Schedule::parse("@every 30s").unwrap(),
            Schedule::parse("@every 31s").unwrap()
        );
    }
}
