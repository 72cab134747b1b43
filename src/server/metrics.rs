//! The daemon's metrics, rendered in the Prometheus text exposition format.
//!
//! Hand-rolled rather than a metrics crate: a dozen families, all updated at the end
//! of a run or read from the connectors' request counters at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::connectors::http::RequestStats;
use crate::scheduler::SyncState;
use crate::sync::Summary;

/// Upper bounds of the run duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Cumulative counts per bucket of [`DURATION_BUCKETS`].
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            if v <= *le {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

#[derive(Debug, Default)]
struct Runs {
    /// (sync, status) → runs.
    runs: BTreeMap<(String, String), u64>,
    /// (sync, outcome) → rows.
    rows: BTreeMap<(String, &'static str), u64>,
    throttled: BTreeMap<String, u64>,
    api_calls: BTreeMap<String, u64>,
    duration: BTreeMap<String, Histogram>,
    last_success: BTreeMap<String, DateTime<Utc>>,
}

/// Counters since the daemon started.
#[derive(Debug, Default)]
pub struct Metrics {
    runs: Mutex<Runs>,
    /// connector name → its client's counters; replaced on reload.
    connectors: Mutex<BTreeMap<String, Arc<RequestStats>>>,
}

impl Metrics {
    /// Counts a finished run.
    pub fn record_run(&self, s: &Summary, finished: DateTime<Utc>) {
        let mut m = self.runs.lock().expect("metrics lock");
        *m.runs
            .entry((s.sync.clone(), s.status.clone()))
            .or_default() += 1;
        for (outcome, n) in [
            ("added", s.added),
            ("changed", s.changed),
            ("removed", s.removed),
            ("unchanged", s.unchanged),
            ("invalid", s.invalid),
            ("rejected", s.rejected),
            ("unsent", s.unsent),
        ] {
            *m.rows.entry((s.sync.clone(), outcome)).or_default() += n;
        }
        *m.throttled.entry(s.sync.clone()).or_default() += s.throttled;
        *m.api_calls.entry(s.sync.clone()).or_default() += s.api_calls;
        m.duration
            .entry(s.sync.clone())
            .or_default()
            .observe(s.duration_ms as f64 / 1000.0);
        if s.status == "ok" || s.status == "rejections" {
            m.last_success.insert(s.sync.clone(), finished);
        }
    }

    /// The connectors whose requests are counted (after a start or a reload).
    pub fn set_connectors(&self, connectors: BTreeMap<String, Arc<RequestStats>>) {
        *self.connectors.lock().expect("metrics lock") = connectors;
    }

    /// The exposition text; `syncs` adds the scheduler's view (running, next run).
    pub fn render(&self, syncs: &[SyncState]) -> String {
        let mut out = String::new();
        let m = self.runs.lock().expect("metrics lock");
        family(
            &mut out,
            "handoff_runs_total",
            "counter",
            "Finished runs by sync and status (ok, rejections, failed, interrupted).",
        );
        for ((sync, status), n) in &m.runs {
            sample(
                &mut out,
                "handoff_runs_total",
                &[("sync", sync), ("status", status)],
                *n as f64,
            );
        }
        family(
            &mut out,
            "handoff_rows_total",
            "counter",
            "Rows by sync and outcome (added, changed, removed, unchanged, invalid, rejected, unsent).",
        );
        for ((sync, outcome), n) in &m.rows {
            sample(
                &mut out,
                "handoff_rows_total",
                &[("sync", sync), ("outcome", outcome)],
                *n as f64,
            );
        }
        family(
            &mut out,
            "handoff_sync_api_calls_total",
            "counter",
            "CRM requests made by a sync's runs, retries included.",
        );
        for (sync, n) in &m.api_calls {
            sample(
                &mut out,
                "handoff_sync_api_calls_total",
                &[("sync", sync)],
                *n as f64,
            );
        }
        family(
            &mut out,
            "handoff_throttled_total",
            "counter",
            "CRM requests answered 429 during a sync's runs.",
        );
        for (sync, n) in &m.throttled {
            sample(
                &mut out,
                "handoff_throttled_total",
                &[("sync", sync)],
                *n as f64,
            );
        }
        family(
            &mut out,
            "handoff_run_duration_seconds",
            "histogram",
            "Run duration by sync.",
        );
        for (sync, h) in &m.duration {
            for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                let le = le.to_string();
                sample(
                    &mut out,
                    "handoff_run_duration_seconds_bucket",
                    &[("sync", sync), ("le", &le)],
                    h.buckets[i] as f64,
                );
            }
            sample(
                &mut out,
                "handoff_run_duration_seconds_bucket",
                &[("sync", sync), ("le", "+Inf")],
                h.count as f64,
            );
            sample(
                &mut out,
                "handoff_run_duration_seconds_sum",
                &[("sync", sync)],
                h.sum,
            );
            sample(
                &mut out,
                "handoff_run_duration_seconds_count",
                &[("sync", sync)],
                h.count as f64,
            );
        }
        family(
            &mut out,
            "handoff_last_success_timestamp_seconds",
            "gauge",
            "Unix time at which a sync's last successful run (ok or rejections) finished.",
        );
        for (sync, at) in &m.last_success {
            sample(
                &mut out,
                "handoff_last_success_timestamp_seconds",
                &[("sync", sync)],
                at.timestamp_millis() as f64 / 1000.0,
            );
        }
        drop(m);

        let connectors = self.connectors.lock().expect("metrics lock").clone();
        family(
            &mut out,
            "handoff_api_requests_total",
            "counter",
            "CRM requests by connector and HTTP status (error: no answer), retries included.",
        );
        for (name, stats) in &connectors {
            for (status, n) in stats.by_status() {
                sample(
                    &mut out,
                    "handoff_api_requests_total",
                    &[("connector", name), ("status", &status)],
                    n as f64,
                );
            }
        }
        family(
            &mut out,
            "handoff_rate_budget_remaining",
            "gauge",
            "Requests left in the CRM's rate window, as its last answer reported.",
        );
        for (name, stats) in &connectors {
            if let Some(n) = stats.rate_remaining() {
                sample(
                    &mut out,
                    "handoff_rate_budget_remaining",
                    &[("connector", name)],
                    n as f64,
                );
            }
        }

        family(
            &mut out,
            "handoff_sync_running",
            "gauge",
            "1 while a run of the sync is in progress.",
        );
        for s in syncs {
            sample(
                &mut out,
                "handoff_sync_running",
                &[("sync", &s.name)],
                f64::from(u8::from(s.running)),
            );
        }
        family(
            &mut out,
            "handoff_sync_next_run_timestamp_seconds",
            "gauge",
            "Unix time of the sync's next scheduled tick.",
        );
        for s in syncs {
            if let Some(next) = s.next_run {
                sample(
                    &mut out,
                    "handoff_sync_next_run_timestamp_seconds",
                    &[("sync", &s.name)],
                    next.timestamp() as f64,
                );
            }
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(sync: &str, status: &str, duration_ms: u64) -> Summary {
        let mut s = crate::cli::failed_summary(sync, "x");
        s.status = status.into();
        s.added = 3;
        s.rejected = 1;
        s.throttled = 2;
        s.api_calls = 5;
        s.duration_ms = duration_ms;
        s
    }

    #[test]
    fn runs_render_as_prometheus_text() {
        let m = Metrics::default();
        let t: DateTime<Utc> = "2025-01-01T00:00:10Z".parse().unwrap();
        m.record_run(&summary("leads", "ok", 1500), t);
        m.record_run(&summary("leads", "failed", 20), t);
        m.record_run(&summary("we\"ird", "ok", 1), t);
        let text = m.render(&[]);
        for line in [
            "# TYPE handoff_runs_total counter",
            "handoff_runs_total{sync=\"leads\",status=\"ok\"} 1",
            "handoff_runs_total{sync=\"leads\",status=\"failed\"} 1",
            "handoff_rows_total{sync=\"leads\",outcome=\"added\"} 6",
            "handoff_rows_total{sync=\"leads\",outcome=\"rejected\"} 2",
            "handoff_throttled_total{sync=\"leads\"} 4",
            "handoff_run_duration_seconds_bucket{sync=\"leads\",le=\"0.1\"} 1",
            "handoff_run_duration_seconds_bucket{sync=\"leads\",le=\"2.5\"} 2",
            "handoff_run_duration_seconds_bucket{sync=\"leads\",le=\"+Inf\"} 2",
            "handoff_run_duration_seconds_count{sync=\"leads\"} 2",
            "handoff_last_success_timestamp_seconds{sync=\"leads\"} 1735689610",
            "handoff_runs_total{sync=\"we\\\"ird\",status=\"ok\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
