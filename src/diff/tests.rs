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

/// A state written before the XXH64 scheme: the same rows, legacy fingerprints.
fn synced_legacy(rows: &[R<'_>]) -> HashMap<u64, u64> {
    rows.iter()
        .map(|r| {
            let row = row(*r);
            let fp = legacy_fingerprint(
                row.match_value.as_deref().expect("match"),
                row.properties
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_deref())),
            );
            (key_hash(row.key.as_deref().expect("key")), fp)
        })
        .collect()
}

#[test]
fn fingerprints_are_pinned() {
    // Stored in users' state stores: these values must never change. The XXH64 value
    // agrees with the reference C implementation (python-xxhash's xxh64_intdigest).
    let mut p = Payload::new();
    p.field(Some(b"a@x.com"));
    p.field(Some(b"score"));
    p.field(Some(b"90"));
    p.field(Some(b"owner"));
    p.field(None);
    assert_eq!(
        p.fingerprint(),
        fingerprint("a@x.com", [("score", Some("90")), ("owner", None)])
    );
    assert_eq!(p.fingerprint(), 0xe069_0988_99bc_ba1e);
    assert_eq!(p.legacy_fingerprint(), 0x82fd_a5ae_ded4_86ba);
    assert_eq!(
        legacy_fingerprint("a@x.com", [("score", Some("90")), ("owner", None)]),
        p.legacy_fingerprint()
    );
    assert_eq!(key_hash("lead-1"), 0x3b2c_d735_cd85_c6b3);
}

/// The fingerprint as every state before the XXH64 scheme computed it, verbatim.
fn fingerprint_before_xxh64<'a>(
    match_value: &str,
    properties: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> u64 {
    fn write_field(h: &mut blake3::Hasher, v: Option<&str>) {
        match v {
            Some(s) => {
                h.update(&[1]);
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            None => {
                h.update(&[0]);
            }
        }
    }
    let mut h = blake3::Hasher::new();
    write_field(&mut h, Some(match_value));
    for (name, value) in properties {
        write_field(&mut h, Some(name));
        write_field(&mut h, value);
    }
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

#[test]
fn the_legacy_scheme_is_the_old_fingerprint() {
    let long = "x".repeat(5000);
    type Case<'a> = (&'a str, &'a [(&'a str, Option<&'a str>)]);
    let cases: &[Case] = &[
        ("a@x.com", &[("score", Some("90"))]),
        ("", &[]),
        (
            "zoë@exämple.com",
            &[("city", Some("Zürich 🏔")), ("owner", None), ("n", Some(""))],
        ),
        (&long, &[("p", Some(long.as_str()))]),
    ];
    for (m, props) in cases {
        assert_eq!(
            legacy_fingerprint(m, props.iter().copied()),
            fingerprint_before_xxh64(m, props.iter().copied()),
            "{m:.20}"
        );
    }
}

#[test]
fn a_legacy_state_is_unchanged_and_restamped_never_resent() {
    let mut d = Differ::new(synced_legacy(&[A1, B1]), false);
    d.push(row(A1));
    d.push(row((Some("2"), Some("b@x.com"), &[("score", Some("86"))])));
    let cs = d.finish();
    assert_eq!(cs.unchanged, 1);
    assert_eq!(cs.legacy, 1);
    assert!(cs.added.is_empty());
    assert_eq!(cs.changed.len(), 1, "a real change is still a change");
    assert!(cs.removed.is_empty());
    let (kh, fp) = Differ::fingerprint_of(&row(A1)).expect("valid");
    assert_eq!(
        cs.restamp,
        [Restamp {
            key: "1".into(),
            key_hash: kh,
            fingerprint: fp
        }]
    );

    // Once restamped (and the change accepted), the next run finds both in the current scheme.
    let mut state = synced_legacy(&[A1]);
    for r in &cs.restamp {
        state.insert(r.key_hash, r.fingerprint);
    }
    for c in cs.to_send() {
        state.insert(c.key_hash, c.fingerprint);
    }
    let mut d = Differ::new(state, false);
    d.push(row(A1));
    d.push(row((Some("2"), Some("b@x.com"), &[("score", Some("86"))])));
    let cs = d.finish();
    assert_eq!((cs.unchanged, cs.legacy, cs.restamp.len()), (2, 0, 0));
}

#[test]
fn restamps_are_capped_and_a_duplicate_is_never_restamped() {
    let mut d = Differ::new(synced_legacy(&[A1, B1]), false);
    d.restamp_limit = 1;
    d.push(row(A1));
    d.push(row(B1));
    let cs = d.finish();
    assert_eq!((cs.unchanged, cs.legacy, cs.restamp.len()), (2, 2, 1));

    let mut d = Differ::new(synced_legacy(&[A1, B1]), false);
    d.push(row(A1));
    d.push(row(B1));
    d.push(row(A1));
    let cs = d.finish();
    assert_eq!(cs.unchanged, 1);
    assert_eq!(
        cs.restamp
            .iter()
            .map(|r| r.key.as_str())
            .collect::<Vec<_>>(),
        ["2"]
    );
    assert!(cs.removed.is_empty(), "an invalid row is not removed");
}

#[test]
fn a_full_resend_sends_legacy_rows_too() {
    let mut d = Differ::new(synced_legacy(&[A1]), true);
    d.push(row(A1));
    let cs = d.finish();
    assert_eq!(
        (cs.changed.len(), cs.unchanged, cs.restamp.len()),
        (1, 0, 0)
    );
}

#[test]
fn probes_and_rows_give_the_same_changeset() {
    // The plan pushes probes computed elsewhere; `push` computes them itself.
    let before = synced(&[A1, B1, (Some("3"), Some("c@x.com"), &[])]);
    let after: &[R] = &[
        (Some("1"), Some("a@x.com"), &[("score", Some("91"))]),
        B1,
        (None, Some("n@x.com"), &[]),
        (Some("4"), None, &[]),
        (Some("5"), Some("e@x.com"), &[]),
        (Some("5"), Some("e@x.com"), &[]),
    ];
    let mut by_rows = Differ::new(before.clone(), false);
    let previous = Arc::new(Previous::from(before));
    let mut by_probes = Differ::with_previous(Arc::clone(&previous), false);
    for r in after {
        by_rows.push(row(*r));
        let rw = row(*r);
        let probe = match (&rw.key, &rw.match_value) {
            (None, _) => Probe::NullKey,
            (Some(k), None) => Probe::NullMatch {
                key_hash: key_hash(k),
            },
            _ => {
                let (kh, fp) = Differ::fingerprint_of(&rw).expect("valid");
                Probe::Row {
                    key_hash: kh,
                    fingerprint: fp,
                    stored: previous.probe(kh, fp, false, || {
                        legacy_fingerprint(
                            rw.match_value.as_deref().expect("match"),
                            rw.properties
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_deref())),
                        )
                    }),
                }
            }
        };
        by_probes.push_probe(probe, || rw);
    }
    let (a, b) = (by_rows.finish(), by_probes.finish());
    assert_eq!(a, b);
    assert_eq!(a.removed, [key_hash("3")]);
    assert_eq!(a.invalid.len(), 4);
}
