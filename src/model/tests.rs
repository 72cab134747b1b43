//! Hashing straight from Arrow columns agrees with the row-by-row definition, on every type.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray,
    Float64Array, Int32Array, Int64Array, LargeStringArray, ListArray, StringArray,
    StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray, UInt8Array,
};
use datafusion::arrow::datatypes::{Int32Type, Int32Type as I32};

use super::*;
use crate::diff::{Differ, Same, Stored, fingerprint, key_hash, legacy_fingerprint};

/// Every type a model may return, each with a NULL: 10 rows.
fn batch() -> RecordBatch {
    let n = 10;
    let with_null = |i: usize| i % 4 != 3;
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "id",
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| (i != 9).then_some(i as i64 * 1_000_003 - 5)),
            )),
        ),
        (
            "region",
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| (i != 8).then(|| format!("r{}", i % 3))),
            )),
        ),
        (
            "email",
            Arc::new(StringArray::from_iter((0..n).map(|i| {
                (i != 5).then(|| {
                    if i == 2 {
                        String::new()
                    } else {
                        format!("zoë{i}@exämple.com")
                    }
                })
            }))),
        ),
        (
            "view",
            Arc::new(StringViewArray::from_iter((0..n).map(|i| {
                with_null(i).then(|| format!("a string longer than twelve bytes, row {i} 東京"))
            }))),
        ),
        (
            "short_view",
            Arc::new(StringViewArray::from_iter(
                (0..n).map(|i| with_null(i).then(|| format!("s{i}"))),
            )),
        ),
        (
            "large",
            Arc::new(LargeStringArray::from_iter(
                (0..n).map(|i| with_null(i).then(|| format!("large {i}"))),
            )),
        ),
        (
            "dict",
            Arc::new(
                (0..n)
                    .map(|i| with_null(i).then_some(["NA-East", "EMEA", "APAC"][i % 3]))
                    .collect::<DictionaryArray<Int32Type>>(),
            ),
        ),
        (
            "score",
            Arc::new(Int32Array::from_iter(
                (0..n).map(|i| with_null(i).then_some(i as i32 * 11 - 20)),
            )),
        ),
        (
            "small",
            Arc::new(UInt8Array::from_iter(
                (0..n).map(|i| with_null(i).then_some(i as u8 * 25)),
            )),
        ),
        (
            "ratio",
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| with_null(i).then_some(i as f64 / 3.0)),
            )),
        ),
        (
            "flag",
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| with_null(i).then_some(i % 2 == 0)),
            )),
        ),
        (
            "seen_at",
            Arc::new(TimestampMicrosecondArray::from_iter((0..n).map(|i| {
                with_null(i).then_some(1_748_736_000_000_000 + i as i64 * 1_500_001)
            }))),
        ),
        (
            "seen_at_tz",
            Arc::new(
                TimestampMillisecondArray::from_iter(
                    (0..n).map(|i| with_null(i).then_some(1_748_736_000_000 + i as i64 * 61_001)),
                )
                .with_timezone("+02:00"),
            ),
        ),
        (
            "day",
            Arc::new(Date32Array::from_iter(
                (0..n).map(|i| with_null(i).then_some(20_000 + i as i32)),
            )),
        ),
        (
            "amount",
            Arc::new(
                Decimal128Array::from_iter(
                    (0..n).map(|i| with_null(i).then_some(i as i128 * 12_345 - 7)),
                )
                .with_precision_and_scale(12, 2)
                .expect("decimal"),
            ),
        ),
        (
            "tags",
            Arc::new(ListArray::from_iter_primitive::<I32, _, _>((0..n).map(
                |i| with_null(i).then(|| (0..i % 3).map(|v| Some(v as i32)).collect::<Vec<_>>()),
            ))),
        ),
        (
            "raw",
            Arc::new(BinaryArray::from_iter((0..n).map(|i| {
                with_null(i).then(|| {
                    if i == 1 {
                        vec![0xff, 0xfe]
                    } else {
                        vec![b'a'; i]
                    }
                })
            }))),
        ),
    ];
    RecordBatch::try_from_iter(cols).expect("batch")
}

const PROPERTY_COLUMNS: [&str; 14] = [
    "view",
    "short_view",
    "large",
    "dict",
    "score",
    "small",
    "ratio",
    "flag",
    "seen_at",
    "seen_at_tz",
    "day",
    "amount",
    "tags",
    "raw",
];

fn renderer(keys: &[&str]) -> Renderer {
    let mapping: Vec<(&str, &str)> = PROPERTY_COLUMNS
        .iter()
        .map(|c| (*c, *c))
        .rev() // the renderer sorts by property, whatever the config's order
        .collect();
    Renderer::from_parts(
        keys,
        "email",
        &mapping,
        &[("nurture_status", "exited"), ("a_first", "")],
    )
}

/// The definition: render the row, then hash the rendered strings.
fn by_rows(r: &Renderer, b: &RecordBatch) -> Vec<Row> {
    let mut rows = Vec::new();
    r.render(b, |row| rows.push(row)).expect("render");
    rows
}

#[test]
fn hashes_from_columns_equal_hashes_of_rendered_rows() {
    for keys in [&["id"][..], &["id", "region"][..], &["region"][..]] {
        let r = renderer(keys);
        let b = batch();
        let rows = by_rows(&r, &b);
        let p = r.prepare(&b).expect("prepare");
        let probes = r.probe(&p, &Previous::empty(), false, &mut Scratch::default());
        assert_eq!(probes.len(), rows.len());
        for (i, (probe, row)) in probes.iter().zip(&rows).enumerate() {
            assert_eq!(&r.row(&p, i), row, "row {i}");
            let want = match (&row.key, &row.match_value) {
                (None, _) => Probe::NullKey,
                (Some(k), None) => Probe::NullMatch {
                    key_hash: key_hash(k),
                },
                (Some(_), Some(_)) => {
                    let (kh, fp) = Differ::fingerprint_of(row).expect("valid row");
                    Probe::Row {
                        key_hash: kh,
                        fingerprint: fp,
                        stored: None,
                    }
                }
            };
            assert_eq!(*probe, want, "keys {keys:?}, row {i}: {row:?}");
        }
        // The batch covers NULL keys, NULL match values and valid rows.
        assert!(probes.contains(&Probe::NullKey));
        assert!(probes.iter().any(|p| matches!(p, Probe::NullMatch { .. })));
        assert!(
            probes
                .iter()
                .filter(|p| matches!(p, Probe::Row { .. }))
                .count()
                >= 6
        );
    }
}

#[test]
fn text_of_each_type_is_what_the_crm_receives() {
    // The fingerprint hashes this text: a change here resends every row once.
    let r = renderer(&["id"]);
    let rows = by_rows(&r, &batch());
    let row = &rows[1];
    let props: HashMap<&str, Option<&str>> = row
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    assert_eq!(row.key.as_deref(), Some("999998"));
    assert_eq!(row.match_value.as_deref(), Some("zoë1@exämple.com"));
    assert_eq!(props["short_view"], Some("s1"));
    assert_eq!(props["large"], Some("large 1"));
    assert_eq!(props["dict"], Some("EMEA"));
    assert_eq!(props["score"], Some("-9"));
    assert_eq!(props["small"], Some("25"));
    assert_eq!(props["ratio"], Some("0.3333333333333333"));
    assert_eq!(props["flag"], Some("false"));
    assert_eq!(props["seen_at"], Some("2025-06-01T00:00:01.500001"));
    assert_eq!(props["seen_at_tz"], Some("2025-06-01T02:01:01.001+02:00"));
    assert_eq!(props["day"], Some("2024-10-05"));
    assert_eq!(props["amount"], Some("123.38"));
    assert_eq!(props["tags"], Some("[0]"));
    // Arrow's cast turns bytes that are not UTF-8 into NULL (and valid ones into text).
    assert_eq!(props["raw"], None);
    assert_eq!(
        rows[2]
            .properties
            .iter()
            .find(|(k, _)| k == "raw")
            .and_then(|(_, v)| v.as_deref()),
        Some("aa")
    );
    assert_eq!(props["nurture_status"], Some("exited"));
    assert_eq!(props["a_first"], Some(""));
    assert_eq!(
        rows[3]
            .properties
            .iter()
            .filter(|(_, v)| v.is_none())
            .count(),
        14
    );
    assert_eq!(
        rows[2].match_value.as_deref(),
        Some(""),
        "empty is not NULL"
    );
}

#[test]
fn hashes_do_not_depend_on_batch_boundaries() {
    let r = renderer(&["id", "region"]);
    let b = batch();
    let whole = r.probe(
        &r.prepare(&b).expect("prepare"),
        &Previous::empty(),
        false,
        &mut Scratch::default(),
    );
    for cut in [1, 3, 7] {
        let mut parts = Vec::new();
        let mut scratch = Scratch::default();
        for (offset, len) in [(0, cut), (cut, b.num_rows() - cut)] {
            let p = r.prepare(&b.slice(offset, len)).expect("prepare");
            parts.extend(r.probe(&p, &Previous::empty(), false, &mut scratch));
        }
        assert_eq!(parts, whole, "cut at {cut}");
    }
}

#[test]
fn probes_find_stored_rows_in_either_scheme() {
    let r = Renderer::from_parts(&["id"], "email", &[("score", "score")], &[]);
    let b = batch();
    let rows = by_rows(&r, &b);
    let current = |row: &Row| Differ::fingerprint_of(row).expect("valid");
    let legacy = |row: &Row| {
        legacy_fingerprint(
            row.match_value.as_deref().expect("match"),
            row.properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref())),
        )
    };
    // Row 0 stored in the current scheme, row 1 in the legacy one, row 4 with another payload.
    let previous = Previous::from_pairs(vec![
        current(&rows[0]),
        (current(&rows[1]).0, legacy(&rows[1])),
        (current(&rows[4]).0, fingerprint("other", [])),
    ]);
    let p = r.prepare(&b).expect("prepare");
    let same = |full| -> Vec<Option<Same>> {
        r.probe(&p, &previous, full, &mut Scratch::default())
            .iter()
            .map(|probe| match probe {
                Probe::Row { stored, .. } => stored.map(|s: Stored| s.same),
                _ => None,
            })
            .collect()
    };
    let got = same(false);
    assert_eq!(
        &got[..5],
        [
            Some(Same::Yes),
            Some(Same::Legacy),
            None,
            None,
            Some(Same::No)
        ]
    );
    assert_eq!(
        &same(true)[..2],
        [Some(Same::No), Some(Same::No)],
        "a full resend ignores the state"
    );
}

#[test]
fn records_renders_only_the_wanted_rows() {
    let r = renderer(&["id"]);
    let b = batch();
    let rows = by_rows(&r, &b);
    let wanted: HashMap<u64, u64> = [&rows[0], &rows[6]]
        .iter()
        .map(|row| Differ::fingerprint_of(row).expect("valid"))
        .collect();
    let mut asked = 0;
    let mut got = Vec::new();
    r.records(
        &b,
        |kh, fp| {
            asked += 1;
            wanted.get(&kh) == Some(&fp)
        },
        |rec| got.push(rec),
    )
    .expect("records");
    let valid = rows
        .iter()
        .filter(|row| Differ::fingerprint_of(row).is_some())
        .count();
    assert_eq!(asked, valid, "every valid row is offered, and only those");
    let keys: Vec<&str> = got.iter().map(|rec| rec.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            rows[0].key.as_deref().unwrap(),
            rows[6].key.as_deref().unwrap()
        ]
    );
    assert_eq!(got[1].properties, rows[6].properties);
    assert_eq!(
        Some(got[1].match_value.as_str()),
        rows[6].match_value.as_deref()
    );
}
