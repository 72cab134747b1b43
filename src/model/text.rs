//! A model's column as text, as the CRM receives it (HubSpot takes every property as a string).
//!
//! The text of a value is what arrow's cast to `Utf8` writes: fingerprints hash it,
//! and records send it. Casting a whole batch builds a string array per column
//! (10M timestamps: ~2 s through chrono's formatter), so the common types are
//! written on demand into a small buffer instead, byte for byte as the cast would
//! (the tests compare the two over each type's whole range):
//!
//! - strings are read in place;
//! - integers as decimal; booleans as `true`/`false`;
//! - timestamps without a time zone, or in UTC, and dates, in years 0 to 9999: ISO 8601,
//!   with as many fraction digits as chrono's `AutoSi` (0, 3, 6 or 9), and `Z` for UTC.
//!
//! Anything else (floats, decimals, other time zones, years out of range, ...) is
//! cast once per batch, and types the cast does not cover (nested ones) are
//! formatted once per batch.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Int64Array, LargeStringArray, StringArray,
    StringViewArray, UInt64Array,
};
use datafusion::arrow::compute::{cast, max, min};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit, UInt64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;

/// One column of a batch, readable as text row by row (see the module docs).
pub(super) enum Text {
    Utf8(StringArray),
    Large(LargeStringArray),
    View(StringViewArray),
    Signed(Int64Array),
    Unsigned(UInt64Array),
    Bool(BooleanArray),
    /// Ticks since the epoch, all within years 0 to 9999.
    Timestamp {
        ticks: Int64Array,
        unit: TimeUnit,
        /// A UTC time zone: the cast writes RFC 3339 with `Z`.
        zulu: bool,
    },
    /// Days since the epoch, all within years 0 to 9999.
    Date(Date32Array),
}

/// Scratch space [`Text::get`] writes a non-string value into.
#[derive(Default)]
pub(super) struct Buf {
    int: itoa::Buffer,
    bytes: [u8; 32],
}

impl Text {
    pub(super) fn new(col: &ArrayRef) -> Result<Self, DataFusionError> {
        use DataType::*;
        Ok(match col.data_type() {
            Utf8 => Text::Utf8(col.as_string::<i32>().clone()),
            LargeUtf8 => Text::Large(col.as_string::<i64>().clone()),
            Utf8View => Text::View(col.as_string_view().clone()),
            Int8 | Int16 | Int32 | Int64 => {
                Text::Signed(cast(col, &Int64)?.as_primitive::<Int64Type>().clone())
            }
            UInt8 | UInt16 | UInt32 | UInt64 => {
                Text::Unsigned(cast(col, &UInt64)?.as_primitive::<UInt64Type>().clone())
            }
            Boolean => Text::Bool(col.as_boolean().clone()),
            Timestamp(unit, tz) if tz.as_deref().is_none_or(is_utc) => {
                // The same buffers as i64s: a reinterpretation, not a conversion.
                let ticks = cast(col, &Int64)?.as_primitive::<Int64Type>().clone();
                let per_day = ticks_per_second(*unit) * SECONDS_PER_DAY;
                let day = |t: Option<i64>| t.map(|t| t.div_euclid(per_day));
                if days_in_range(day(min(&ticks)), day(max(&ticks))) {
                    Text::Timestamp {
                        ticks,
                        unit: *unit,
                        zulu: tz.is_some(),
                    }
                } else {
                    Text::cast(col)
                }
            }
            Date32 => {
                let days = col.as_primitive().clone();
                if days_in_range(min(&days).map(i64::from), max(&days).map(i64::from)) {
                    Text::Date(days)
                } else {
                    Text::cast(col)
                }
            }
            _ => Text::cast(col),
        })
    }

    /// Arrow's cast to text, or its display form where the cast has none.
    fn cast(col: &ArrayRef) -> Self {
        if col.data_type().is_nested() {
            return Text::Utf8(formatted(col));
        }
        match cast(col, &DataType::Utf8) {
            Ok(c) => Text::Utf8(c.as_string::<i32>().clone()),
            Err(_) => Text::Utf8(formatted(col)),
        }
    }

    /// Row `i` as text; `None` for NULL. Non-string values are written into `buf`.
    #[inline]
    pub(super) fn get<'a>(&'a self, i: usize, buf: &'a mut Buf) -> Option<&'a str> {
        match self {
            Text::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Text::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Text::View(a) => a.is_valid(i).then(|| a.value(i)),
            Text::Signed(a) => a.is_valid(i).then(|| buf.int.format(a.value(i))),
            Text::Unsigned(a) => a.is_valid(i).then(|| buf.int.format(a.value(i))),
            Text::Bool(a) => a
                .is_valid(i)
                .then(|| if a.value(i) { "true" } else { "false" }),
            Text::Timestamp { ticks, unit, zulu } => ticks.is_valid(i).then(|| {
                let n = write_timestamp(&mut buf.bytes, ticks.value(i), *unit, *zulu);
                ascii(&buf.bytes[..n])
            }),
            Text::Date(a) => a.is_valid(i).then(|| {
                write_date(&mut buf.bytes, i64::from(a.value(i)));
                ascii(&buf.bytes[..10])
            }),
        }
    }
}

/// Time zone names whose offset is always zero, which the cast writes as `Z`.
fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "+00:00" | "Z")
}

/// Whether a column's least and greatest day (`None` when every value is NULL) are
/// both within years 0 to 9999, so every value can be written directly.
fn days_in_range(least: Option<i64>, greatest: Option<i64>) -> bool {
    [least, greatest]
        .into_iter()
        .flatten()
        .all(|d| (MIN_DAY..=MAX_DAY).contains(&d))
}

const SECONDS_PER_DAY: i64 = 86_400;
/// 0000-01-01 and 9999-12-31 as days since 1970-01-01: the years chrono writes with
/// four digits and no sign.
const MIN_DAY: i64 = -719_528;
const MAX_DAY: i64 = 2_932_896;

fn ticks_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// Writes `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff][Z]` (at most 30 bytes), as
/// chrono's `Debug` (no time zone) and `to_rfc3339_opts(AutoSi, true)` (UTC) do.
/// The day must be within [`MIN_DAY`]..=[`MAX_DAY`].
#[inline]
fn write_timestamp(out: &mut [u8; 32], ticks: i64, unit: TimeUnit, zulu: bool) -> usize {
    let per_second = ticks_per_second(unit);
    let seconds = ticks.div_euclid(per_second);
    // The fraction in nanoseconds; below 10^9, so it fits.
    let nanos = (ticks.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32;
    let day = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY) as u32;
    write_date(out, day);
    out[10] = b'T';
    two_digits(&mut out[11..13], second_of_day / 3600);
    out[13] = b':';
    two_digits(&mut out[14..16], second_of_day / 60 % 60);
    out[16] = b':';
    two_digits(&mut out[17..19], second_of_day % 60);
    let mut n = 19;
    let (fraction, digits) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if digits > 0 {
        out[n] = b'.';
        let mut f = fraction;
        for k in (0..digits).rev() {
            out[n + 1 + k] = b'0' + (f % 10) as u8;
            f /= 10;
        }
        n += 1 + digits;
    }
    if zulu {
        out[n] = b'Z';
        n += 1;
    }
    n
}

/// Writes `YYYY-MM-DD` for days since 1970-01-01, within [`MIN_DAY`]..=[`MAX_DAY`]
/// (Howard Hinnant's `civil_from_days`).
#[inline]
fn write_date(out: &mut [u8; 32], day: i64) {
    debug_assert!((MIN_DAY..=MAX_DAY).contains(&day));
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    two_digits(&mut out[0..2], (y / 100) as u32);
    two_digits(&mut out[2..4], (y % 100) as u32);
    out[4] = b'-';
    two_digits(&mut out[5..7], m as u32);
    out[7] = b'-';
    two_digits(&mut out[8..10], d as u32);
}

#[inline]
fn two_digits(out: &mut [u8], v: u32) {
    out[0] = b'0' + (v / 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// The ASCII [`write_timestamp`] and [`write_date`] wrote.
#[inline]
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("dates are written in ASCII")
}

/// Arrow's display form of each value; NULL stays NULL (so does a type it cannot display).
fn formatted(col: &ArrayRef) -> StringArray {
    let opts = FormatOptions::default();
    let f = ArrayFormatter::try_new(col.as_ref(), &opts).ok();
    (0..col.len())
        .map(|i| {
            if col.is_null(i) {
                return None;
            }
            f.as_ref().map(|f| f.value(i).to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        BooleanArray, Date32Array, Int8Array, Int16Array, Int32Array, Int64Array,
        TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
        TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
    };
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// Every row of `col` reads as arrow's cast to text writes it; returns which path read it.
    fn agrees_with_cast(col: ArrayRef) -> &'static str {
        let text = Text::new(&col).expect("text");
        let want = cast(&col, &DataType::Utf8).expect("cast");
        let want = want.as_string::<i32>();
        let mut buf = Buf::default();
        for i in 0..col.len() {
            let expected = want.is_valid(i).then(|| want.value(i));
            assert_eq!(
                text.get(i, &mut buf),
                expected,
                "row {i} of a {} column",
                col.data_type()
            );
        }
        match text {
            Text::Utf8(_) | Text::Large(_) | Text::View(_) => "cast",
            _ => "direct",
        }
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x6a09_e667_f3bc_c908)
    }

    #[test]
    fn integers_and_booleans_read_as_the_cast_writes_them() {
        let mut r = rng();
        let mut values: Vec<Option<i64>> = vec![Some(i64::MIN), Some(i64::MAX), Some(0), None];
        values.extend((0..10_000).map(|_| Some(r.random::<i64>() >> r.random_range(0..64))));
        // Each integer type gets the same values, wrapped to its width.
        macro_rules! narrowed {
            ($array:ty, $t:ty) => {
                Arc::new(<$array>::from_iter(
                    values.iter().map(|v| v.map(|v| v as $t)),
                )) as ArrayRef
            };
        }
        let cols: Vec<ArrayRef> = vec![
            narrowed!(Int64Array, i64),
            narrowed!(Int32Array, i32),
            narrowed!(Int16Array, i16),
            narrowed!(Int8Array, i8),
            narrowed!(UInt64Array, u64),
            narrowed!(UInt32Array, u32),
            narrowed!(UInt16Array, u16),
            narrowed!(UInt8Array, u8),
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
        ];
        for col in cols {
            assert_eq!(agrees_with_cast(col), "direct");
        }
    }

    /// Ticks across years 0 to 9999 (as far as an i64 reaches), with the edges,
    /// every fraction width and NULLs.
    fn ticks(per_second: i64) -> Vec<Option<i64>> {
        let day = i128::from(SECONDS_PER_DAY * per_second);
        let clamp = |t: i128| t.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        let first = clamp(i128::from(MIN_DAY) * day);
        let last = clamp(i128::from(MAX_DAY + 1) * day - 1);
        let mut r = rng();
        let mut v = vec![Some(first), Some(last), Some(0), Some(-1), Some(1), None];
        for _ in 0..20_000 {
            let t = r.random_range(first..=last);
            // Round some to whole seconds, milliseconds and microseconds.
            let t = match r.random_range(0..4) {
                0 => t - t.rem_euclid(per_second),
                1 if per_second >= 1_000 => t - t.rem_euclid(per_second / 1_000),
                2 if per_second >= 1_000_000 => t - t.rem_euclid(per_second / 1_000_000),
                _ => t,
            };
            v.push(Some(t));
        }
        v
    }

    #[test]
    fn timestamps_and_dates_in_years_0_to_9999_read_as_the_cast_writes_them() {
        for tz in [None, Some("UTC"), Some("+00:00")] {
            let with = |a: ArrayRef| -> ArrayRef {
                match tz {
                    None => a,
                    Some(tz) => cast(
                        &a,
                        &DataType::Timestamp(
                            match a.data_type() {
                                DataType::Timestamp(u, _) => *u,
                                _ => unreachable!(),
                            },
                            Some(tz.into()),
                        ),
                    )
                    .expect("with time zone"),
                }
            };
            let cols: Vec<ArrayRef> = vec![
                Arc::new(TimestampSecondArray::from(ticks(1))),
                Arc::new(TimestampMillisecondArray::from(ticks(1_000))),
                Arc::new(TimestampMicrosecondArray::from(ticks(1_000_000))),
                // Nanoseconds in an i64 reach only 1677 to 2262.
                Arc::new(TimestampNanosecondArray::from(ticks(1_000_000_000))),
            ];
            for col in cols {
                assert_eq!(agrees_with_cast(with(col)), "direct", "time zone {tz:?}");
            }
        }
        let days: Vec<Option<i32>> = ticks(1)
            .into_iter()
            .map(|t| t.map(|t| t.div_euclid(SECONDS_PER_DAY) as i32))
            .collect();
        assert_eq!(
            agrees_with_cast(Arc::new(Date32Array::from(days))),
            "direct"
        );
    }

    #[test]
    fn other_values_are_cast() {
        let beyond = (MAX_DAY + 1) * SECONDS_PER_DAY;
        let before = (MIN_DAY - 1) * SECONDS_PER_DAY;
        let cols: Vec<ArrayRef> = vec![
            // Years 10000 and -1: chrono writes a sign.
            Arc::new(TimestampSecondArray::from(vec![Some(0), Some(beyond)])),
            Arc::new(TimestampSecondArray::from(vec![Some(before), None])),
            Arc::new(Date32Array::from(vec![Some(0), Some((MAX_DAY + 1) as i32)])),
            // Another time zone: an offset, not Z.
            Arc::new(
                TimestampSecondArray::from(vec![Some(0), Some(1_748_736_000)])
                    .with_timezone("+02:00"),
            ),
            Arc::new(datafusion::arrow::array::Float64Array::from(vec![
                Some(0.1),
                Some(1e21),
                None,
            ])),
        ];
        for col in cols {
            assert_eq!(agrees_with_cast(col), "cast");
        }
    }
}
