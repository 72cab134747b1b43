//! Table-driven tests of the ChangeSet.

use super::*;

/// (key, match value, [(property, value)]) — `None` is SQL NULL.
type R<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    &'a [(&'a str, Option<&'a str>)],
);

fn row((key, m, props): R<'_>) -> Row {
    Row {
        key: key.map(str::to_string),
        match_value: m.map(str::to_string),
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect(),
    }
}

/// State as it would be after syncing `rows` successfully.
fn synced(rows: &[R<'_>]) -> HashMap<u64, u64> {
    let mut d = Differ::new(HashMap::new(), false);
    for r in rows {
        d.push(row(*r));
    }
    d.into_state()
}

impl Differ {
    fn into_state(self) -> HashMap<u64, u64> {
        let cs = self.finish();
        cs.to_send().map(|r| (r.key_hash, r.fingerprint)).collect()
    }
}

struct Case<'a> {
    name: &'a str,
    before: &'a [R<'a>],
    after: &'a [R<'a>],
    full: bool,
    added: &'a [&'a str],
    changed: &'a [&'a str],
    removed: &'a [&'a str],
    unchanged: u64,
    invalid: &'a [(Option<&'a str>, InvalidReason)],
}

const A1: R = (Some("1"), Some("a@x.com"), &[("score", Some("90"))]);
const B1: R = (Some("2"), Some("b@x.com"), &[("score", Some("85"))]);

#[test]
fn changesets() {
    let cases = [
        Case {
            name: "first run: everything is added",
            before: &[],
            after: &[A1, B1],
            full: false,
            added: &["1", "2"],
            changed: &[],
            removed: &[],
            unchanged: 0,
            invalid: &[],
        },
        Case {
            name: "no change: nothing to send",
            before: &[A1, B1],
            after: &[A1, B1],
            full: false,
            added: &[],
            changed: &[],
            removed: &[],
            unchanged: 2,
            invalid: &[],
        },
        Case {
            name: "a mapped value changed",
            before: &[A1, B1],
            after: &[(Some("1"), Some("a@x.com"), &[("score", Some("91"))]), B1],
            full: false,
            added: &[],
            changed: &["1"],
            removed: &[],
            unchanged: 1,
            invalid: &[],
        },
        Case {
            name: "the match value changed",
            before: &[A1],
            after: &[(Some("1"), Some("new@x.com"), &[("score", Some("90"))])],
            full: false,
            added: &[],
            changed: &["1"],
            removed: &[],
            unchanged: 0,
            invalid: &[],
        },
        Case {
            name: "a row left the model",
            before: &[A1, B1],
            after: &[A1],
            full: false,
            added: &[],
            changed: &[],
            removed: &["2"],
            unchanged: 1,
            invalid: &[],
        },
        Case {
            name: "value became NULL",
            before: &[A1],
            after: &[(Some("1"), Some("a@x.com"), &[("score", None)])],
            full: false,
            added: &[],
            changed: &["1"],
            removed: &[],
            unchanged: 0,
            invalid: &[],
        },
        Case {
            name: "NULL and empty string differ",
            before: &[(Some("1"), Some("a@x.com"), &[("score", None)])],
            after: &[(Some("1"), Some("a@x.com"), &[("score", Some(""))])],
            full: false,
            added: &[],
            changed: &["1"],
            removed: &[],
            unchanged: 0,
            invalid: &[],
        },
        Case {
            name: "rendering changed with the type (int 90 to float 90.0)",
            before: &[A1],
            after: &[(Some("1"), Some("a@x.com"), &[("score", Some("90.0"))])],
            full: false,
            added: &[],
            changed: &["1"],
            removed: &[],
            unchanged: 0,
            invalid: &[],
        },
        Case {
            name: "unicode keys and values round-trip",
            before: &[(
                Some("ключ-東京"),
                Some("zoë@exämple.com"),
                &[("city", Some("Zürich 🏔"))],
            )],
            after: &[
                (
                    Some("ключ-東京"),
                    Some("zoë@exämple.com"),
                    &[("city", Some("Zürich 🏔"))],
                ),
                (
                    Some("ключ-東京2"),
                    Some("zoë@exämple.com"),
                    &[("city", Some("Zürich 🏔️"))],
                ),
            ],
            full: false,
            added: &["ключ-東京2"],
            changed: &[],
            removed: &[],
            unchanged: 1,
            invalid: &[],
        },
        Case {
            name: "field boundaries are part of the fingerprint",
            before: &[(Some("1"), Some("a"), &[("p", Some("bc"))])],
            after: &[(Some("1"), Some("ab"), &[("p", Some("c"))])],
            full: false,
            added: &[],
            changed: &["1"],
            removed: &[],
            unchanged: 0,
            invalid: &[],
        },
        Case {
            name: "NULL key is invalid, never sent",
            before: &[],
            after: &[(None, Some("n@x.com"), &[]), A1],
            full: false,
            added: &["1"],
            changed: &[],
            removed: &[],
            unchanged: 0,
            invalid: &[(None, InvalidReason::NullKey)],
        },
        Case {
            name: "a duplicated key invalidates every occurrence, even an unchanged one",
            before: &[A1],
            after: &[A1, B1, (Some("1"), Some("other@x.com"), &[])],
            full: false,
            added: &["2"],
            changed: &[],
            removed: &[],
            unchanged: 0,
            invalid: &[
                (Some("1"), InvalidReason::DuplicateKey),
                (Some("1"), InvalidReason::DuplicateKey),
            ],
        },
        Case {
            name: "a key repeated three times among new rows",
            before: &[],
            after: &[B1, B1, B1, A1],
            full: false,
            added: &["1"],
            changed: &[],
            removed: &[],
            unchanged: 0,
            invalid: &[
                (Some("2"), InvalidReason::DuplicateKey),
                (Some("2"), InvalidReason::DuplicateKey),
                (Some("2"), InvalidReason::DuplicateKey),
            ],
        },
        Case {
            name: "an invalid row that was synced before is not removed",
            before: &[A1, B1],
            after: &[A1, B1, B1],
            full: false,
            added: &[],
            changed: &[],
            removed: &[],
            unchanged: 1,
            invalid: &[
                (Some("2"), InvalidReason::DuplicateKey),
                (Some("2"), InvalidReason::DuplicateKey),
            ],
        },
        Case {
            name: "NULL match value is invalid",
            before: &[],
            after: &[(Some("3"), None, &[("score", Some("1"))])],
            full: false,
            added: &[],
            changed: &[],
            removed: &[],
            unchanged: 0,
            invalid: &[(Some("3"), InvalidReason::NullMatchValue)],
        },
        Case {
            name: "full resend: unchanged rows are sent again",
            before: &[A1, B1],
            after: &[A1, B1],
            full: true,
            added: &[],
            changed: &["1", "2"],
            removed: &[],
            unchanged: 0,
            invalid: &[],
        },
    ];

    for c in cases {
        let mut d = Differ::new(synced(c.before), c.full);
        for r in c.after {
            d.push(row(*r));
        }
        let cs = d.finish();
        let hashes = |v: &[Change]| v.iter().map(|r| r.key_hash).collect::<Vec<_>>();
        let want = |keys: &[&str]| keys.iter().map(|k| key_hash(k)).collect::<Vec<_>>();
        assert_eq!(hashes(&cs.added), want(c.added), "{}: added", c.name);
        assert_eq!(hashes(&cs.changed), want(c.changed), "{}: changed", c.name);
        let mut removed: Vec<u64> = c.removed.iter().map(|k| key_hash(k)).collect();
        removed.sort_unstable();
        assert_eq!(cs.removed, removed, "{}: removed", c.name);
        assert_eq!(cs.unchanged, c.unchanged, "{}: unchanged", c.name);
        let invalid: Vec<(Option<&str>, InvalidReason)> = cs
            .invalid
            .iter()
            .map(|i| (i.key.as_deref(), i.reason))
            .collect();
        assert_eq!(invalid, c.invalid, "{}: invalid", c.name);
    }
}

#[test]
fn unmapped_columns_do_not_exist_for_the_diff() {
    // The model stage renders only mapped columns, so two rows that differ in an
    // unmapped column reach the differ as the same Row.
    let before = synced(&[A1]);
    let mut d = Differ::new(before, false);
    d.push(row(A1));
    let cs = d.finish();
    assert_eq!(cs.unchanged, 1);
    assert!(cs.to_send().next().is_none());
}

#[test]
fn fingerprint_is_stable() {
    // Fingerprints live in users' state stores: changing the function resends everything.
    assert_eq!(
        fingerprint("a@x.com", [("score", Some("90"))]),
        fingerprint("a@x.com", [("score", Some("90"))])
    );
    assert_ne!(
        fingerprint("a", [("p", None)]),
        fingerprint("a", [("p", Some(""))])
    );
    assert_ne!(key_hash("1"), key_hash("2"));
}

#[test]
fn the_sample_keeps_the_first_changes_in_full_but_never_an_invalid_row() {
    let mut d = Differ::new(synced(&[A1]), false);
    d.push(row(B1));
    d.push(row((Some("1"), Some("a@x.com"), &[("score", Some("99"))])));
    d.push(row(B1)); // now a duplicate: B1 leaves the sample
    let cs = d.finish();
    let sample: Vec<(&str, &str)> = cs
        .sample
        .iter()
        .map(|(op, r)| (*op, r.key.as_str()))
        .collect();
    assert_eq!(sample, [("change", "1")]);
    assert_eq!(cs.sample[0].1.properties[0].1.as_deref(), Some("99"));
}

#[test]
fn a_row_rendered_again_has_the_planned_fingerprint() {
    let mut d = Differ::new(HashMap::new(), false);
    d.push(row(A1));
    let cs = d.finish();
    let planned = cs.added[0];
    assert_eq!(
        Differ::fingerprint_of(&row(A1)),
        Some((planned.key_hash, planned.fingerprint))
    );
    assert_eq!(Differ::fingerprint_of(&row((None, Some("x"), &[]))), None);
    assert_eq!(Differ::fingerprint_of(&row((Some("1"), None, &[]))), None);
}
