//! Run summaries for people (terminal) and machines (JSON Lines).

use std::fmt::Write as _;

use serde_json::json;

use crate::sync::Summary;

/// One JSON object on one line; the stable keys first.
pub fn json_line(s: &Summary) -> String {
    let v = json!({
        "sync": s.sync,
        "added": s.added,
        "changed": s.changed,
        "removed": s.removed,
        "unchanged": s.unchanged,
        "invalid": s.invalid,
        "rejected": s.rejected,
        "api_calls": s.api_calls,
        "throttled": s.throttled,
        "duration_ms": s.duration_ms,
        "status": s.status,
        "run_id": s.run_id,
        "unsent": s.unsent,
        "tasks_created": s.tasks_created,
        "tasks_pending": s.tasks_pending,
        "owners_kept": s.owners_kept,
        "requests_planned": s.requests_planned,
        "error": s.error,
        "sample": s.sample.iter().map(|c| json!({
            "op": c.op,
            "key": c.key,
            "properties": c.properties.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "rejections": s.rejections.iter().map(|r| json!({
            "key": r.key, "category": r.category, "message": r.message,
        })).collect::<Vec<_>>(),
    });
    v.to_string()
}

/// Text safe for a terminal: control characters (ANSI escapes included) are shown escaped, not obeyed.
pub fn term_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A human summary; `planned` output also shows a sample of the changes.
pub fn human(s: &Summary) -> String {
    let mut o = String::new();
    let title = match s.status.as_str() {
        "planned" => "plan",
        _ => "sync",
    };
    let _ = writeln!(
        o,
        "{title} {}{}: {}",
        term_safe(&s.sync),
        s.run_id.map(|r| format!(" (run {r})")).unwrap_or_default(),
        s.status
    );
    let _ = writeln!(
        o,
        "  added {}  changed {}  removed {}  unchanged {}  invalid {}  rejected {}",
        s.added, s.changed, s.removed, s.unchanged, s.invalid, s.rejected
    );
    if s.status == "planned" {
        let _ = writeln!(
            o,
            "  would make {} API request(s); nothing was sent",
            s.requests_planned
        );
        for c in &s.sample {
            let props: Vec<String> = c
                .properties
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        term_safe(k),
                        v.as_deref().map(term_safe).unwrap_or_else(|| "NULL".into())
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                "    {:<6} {}  {}",
                c.op,
                term_safe(&c.key),
                props.join(" ")
            );
        }
    } else {
        let _ = writeln!(
            o,
            "  api calls {}  throttled {}  unsent {}  {} ms",
            s.api_calls, s.throttled, s.unsent, s.duration_ms
        );
        if s.tasks_created + s.tasks_pending + s.owners_kept > 0 {
            let _ = writeln!(
                o,
                "  tasks created {}  tasks pending {}  existing owners kept {}",
                s.tasks_created, s.tasks_pending, s.owners_kept
            );
        }
    }
    for r in &s.rejections {
        let _ = writeln!(
            o,
            "  rejected {}: {} {}",
            term_safe(&r.key),
            term_safe(&r.category),
            term_safe(&r.message)
        );
    }
    let shown = s.rejections.len() as u64;
    let total = s.rejected + s.invalid;
    if total > shown {
        let _ = writeln!(o, "  … and {} more (see the run record)", total - shown);
    }
    if let Some(e) = &s.error {
        let _ = writeln!(o, "  error: {}", term_safe(e));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_output_escapes_control_characters() {
        assert_eq!(term_safe("a\u{1b}[31mred\nb"), "a\\u{1b}[31mred\\nb");
        assert_eq!(term_safe("zoë 東京"), "zoë 東京");
    }
}
