//! `GET /query` and `/queryAll`: SOQL checked against the schema and run over the
//! org, with Salesforce's result shapes, `nextRecordsUrl` paging and error messages.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Days, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::super::Shared;
use super::errors::{SfError, unsupported_type};
use super::ids;
use super::schema::{self, FieldRef, Kind, SObject};
use super::soql::{self, Cond, Literal, Op, Relative, SelectItem};
use super::store::{Org, Record};

/// Records per page unless `Sforce-Query-Options: batchSize=N` asks for fewer (200–2000).
pub(crate) const DEFAULT_BATCH: usize = 2000;
const MIN_BATCH: usize = 200;
/// Query locators kept for paging; the oldest is forgotten first.
const MAX_CURSORS: usize = 50;

pub(super) fn routes(router: Router<Shared>) -> Router<Shared> {
    router
        .route("/{version}/query", get(query))
        .route("/{version}/queryAll", get(query_all))
        .route("/{version}/query/{locator}", get(more))
        .route("/{version}/queryAll/{locator}", get(more))
}

type Params = QueryParams<Vec<(String, String)>>;

async fn query(
    State(state): State<Shared>,
    Path(version): Path<String>,
    QueryParams(params): Params,
    headers: HeaderMap,
) -> Response {
    run_request(&state, &version, &params, &headers, false)
}

async fn query_all(
    State(state): State<Shared>,
    Path(version): Path<String>,
    QueryParams(params): Params,
    headers: HeaderMap,
) -> Response {
    run_request(&state, &version, &params, &headers, true)
}

fn run_request(
    state: &Shared,
    version: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
    all: bool,
) -> Response {
    let Some(text) = params.iter().find(|(k, _)| k == "q").map(|(_, v)| v) else {
        return SfError::bad_request("MALFORMED_QUERY", "A query string has to be specified")
            .into_response();
    };
    let batch = batch_size(headers);
    let mut data = state.lock();
    super::bulk::process_due(&mut data);
    let sf = &mut data.salesforce;
    let now = sf.now().1;
    match run(&sf.org, text, all, now, version) {
        Ok(Outcome::Count(n)) => {
            axum::Json(json!({"totalSize": n, "done": true, "records": []})).into_response()
        }
        Ok(Outcome::Rows(rows)) => {
            let total = rows.len();
            if total <= batch {
                return axum::Json(json!({"totalSize": total, "done": true, "records": rows}))
                    .into_response();
            }
            let first: Vec<Value> = rows[..batch].to_vec();
            let locator = ids::random(ids::QUERY_LOCATOR);
            sf.cursors.push((locator.clone(), Cursor { rows, batch }));
            if sf.cursors.len() > MAX_CURSORS {
                sf.cursors.remove(0);
            }
            axum::Json(json!({
                "totalSize": total,
                "done": false,
                "nextRecordsUrl": format!("/services/data/{version}/query/{locator}-{batch}"),
                "records": first,
            }))
            .into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// `GET /query/{locator}-{offset}`: the next page of a query.
async fn more(
    State(state): State<Shared>,
    Path((version, locator)): Path<(String, String)>,
) -> Response {
    let invalid = || SfError::bad_request("INVALID_QUERY_LOCATOR", "invalid query locator");
    let Some((id, offset)) = locator.rsplit_once('-') else {
        return invalid().into_response();
    };
    let Ok(offset) = offset.parse::<usize>() else {
        return invalid().into_response();
    };
    let data = state.lock();
    let Some((_, cursor)) = data.salesforce.cursors.iter().find(|(l, _)| l == id) else {
        return invalid().into_response();
    };
    if offset > cursor.rows.len() {
        return invalid().into_response();
    }
    let end = (offset + cursor.batch).min(cursor.rows.len());
    let mut body = json!({
        "totalSize": cursor.rows.len(),
        "done": end == cursor.rows.len(),
        "records": cursor.rows[offset..end],
    });
    if end < cursor.rows.len() {
        body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{id}-{end}"));
    }
    axum::Json(body).into_response()
}

/// The rows of a query still to be paged through.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    rows: Vec<Value>,
    batch: usize,
}

fn batch_size(headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|part| part.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("batchSize"))
                .and_then(|(_, n)| n.trim().parse::<usize>().ok())
        })
        .map_or(DEFAULT_BATCH, |n| n.clamp(MIN_BATCH, DEFAULT_BATCH))
}

/// What a query returns.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// `COUNT()`: only a size.
    Count(usize),
    /// Records or aggregate rows, each with its `attributes`.
    Rows(Vec<Value>),
}

/// Parses, checks and runs `text` over `org`; `all` includes deleted records (`queryAll`).
pub(crate) fn run(
    org: &Org,
    text: &str,
    all: bool,
    now: DateTime<Utc>,
    version: &str,
) -> Result<Outcome, SfError> {
    let fail = |pos: usize, code: &'static str, detail: String| {
        SfError::bad_request(code, position_message(text, pos, &detail))
    };
    let parsed = soql::parse(text).map_err(|e| fail(e.pos, "MALFORMED_QUERY", e.message))?;
    let kind = SObject::from_name(&parsed.from.text).ok_or_else(|| {
        fail(
            parsed.from.pos,
            "INVALID_TYPE",
            unsupported_type(&parsed.from.text),
        )
    })?;
    let resolve = |name: &soql::Name| -> Result<FieldRef, SfError> {
        if let Some((relationship, _)) = name.text.split_once('.') {
            return Err(fail(
                name.pos,
                "INVALID_FIELD",
                format!(
                    "Didn't understand relationship '{relationship}' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names."
                ),
            ));
        }
        kind.field(&name.text)
            .map(|field| org.canonical(kind, field))
            .ok_or_else(|| {
                fail(
                    name.pos,
                    "INVALID_FIELD",
                    format!(
                        "No such column '{}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                        name.text,
                        kind.name()
                    ),
                )
            })
    };

    // The select list.
    let mut columns: Vec<Column> = Vec::new();
    let mut aggregates = 0;
    let mut unnamed = 0;
    let mut plain_count = None;
    for item in &parsed.select {
        match item {
            SelectItem::Field(name) => {
                let field = resolve(name)?;
                if columns
                    .iter()
                    .any(|c| matches!(c, Column::Field(f, _) if f.name() == field.name()))
                {
                    return Err(fail(
                        name.pos,
                        "MALFORMED_QUERY",
                        format!("duplicate field selected: {}", field.name()),
                    ));
                }
                columns.push(Column::Field(field, name.pos));
            }
            SelectItem::Count {
                field: None, pos, ..
            } => plain_count = Some(*pos),
            SelectItem::Count { field, alias, .. } => {
                let counted = field.as_ref().map(&resolve).transpose()?;
                // `exprN` numbers only the aggregates without an alias, as Salesforce does.
                let label = alias.clone().unwrap_or_else(|| {
                    unnamed += 1;
                    format!("expr{}", unnamed - 1)
                });
                aggregates += 1;
                columns.push(Column::Count(counted, label));
            }
        }
    }
    if let Some(pos) = plain_count {
        if parsed.select.len() > 1 {
            return Err(fail(
                pos,
                "MALFORMED_QUERY",
                "COUNT() must be the only element in the SELECT list".to_owned(),
            ));
        }
        if let Some(group) = &parsed.group_by {
            return Err(fail(
                group.pos,
                "MALFORMED_QUERY",
                "COUNT() can't be used with GROUP BY: use COUNT(fieldName)".to_owned(),
            ));
        }
        if let Some(order) = parsed.order_by.first() {
            return Err(fail(
                order.field.pos,
                "MALFORMED_QUERY",
                "COUNT() can't be used with ORDER BY: use COUNT(fieldName)".to_owned(),
            ));
        }
    }
    let group = parsed.group_by.as_ref().map(&resolve).transpose()?;
    let aggregated = aggregates > 0 || group.is_some();
    if aggregated {
        for column in &columns {
            if let Column::Field(field, pos) = column
                && group.as_ref().is_none_or(|g| g.name() != field.name())
            {
                return Err(fail(
                    *pos,
                    "MALFORMED_QUERY",
                    format!("Field must be grouped or aggregated: {}", field.name()),
                ));
            }
        }
    }
    let mut order = Vec::new();
    for item in &parsed.order_by {
        let field = resolve(&item.field)?;
        if aggregated && group.as_ref().is_none_or(|g| g.name() != field.name()) {
            return Err(fail(
                item.field.pos,
                "MALFORMED_QUERY",
                format!(
                    "Ordered field must be grouped or aggregated: {}",
                    field.name()
                ),
            ));
        }
        order.push((field, item.descending, item.nulls_first));
    }
    let filter = parsed
        .filter
        .as_ref()
        .map(|cond| compile(cond, &resolve, now, &fail))
        .transpose()?;

    // Rows.
    let mut matched: Vec<&Record> = (if all {
        Box::new(org.all_records(kind)) as Box<dyn Iterator<Item = &Record>>
    } else {
        Box::new(org.records(kind))
    })
    .filter(|record| filter.as_ref().is_none_or(|f| f.matches(record)))
    .collect();
    let skip = usize::try_from(parsed.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let take = parsed
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));

    if plain_count.is_some() {
        return Ok(Outcome::Count(matched.len().saturating_sub(skip).min(take)));
    }

    if aggregated {
        let rows = aggregate(&matched, &columns, group.as_ref(), &order);
        let rows: Vec<Value> = rows.into_iter().skip(skip).take(take).collect();
        if rows.len() > DEFAULT_BATCH {
            return Err(SfError::bad_request(
                "EXCEEDED_ID_LIMIT",
                "Aggregate query does not support queryMore(), use LIMIT to restrict the results to a single batch",
            ));
        }
        return Ok(Outcome::Rows(rows));
    }

    if !order.is_empty() {
        matched.sort_by(|a, b| {
            order
                .iter()
                .map(|(field, descending, nulls_first)| {
                    compare_for_order(
                        a.get(field.name()),
                        b.get(field.name()),
                        *descending,
                        *nulls_first,
                    )
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }
    let fields: Vec<FieldRef> = columns
        .into_iter()
        .filter_map(|c| match c {
            Column::Field(field, _) => Some(field),
            Column::Count(..) => None,
        })
        .collect();
    Ok(Outcome::Rows(
        matched
            .into_iter()
            .skip(skip)
            .take(take)
            .map(|record| render(record, &fields, version))
            .collect(),
    ))
}

enum Column {
    Field(FieldRef, usize),
    /// `COUNT(field)` and its output name.
    Count(Option<FieldRef>, String),
}

/// A record as query and read endpoints return it: `attributes`, then the fields asked for.
pub(crate) fn render(record: &Record, fields: &[FieldRef], version: &str) -> Value {
    let mut object = Map::new();
    object.insert(
        "attributes".to_owned(),
        json!({
            "type": record.kind.name(),
            "url": format!("/services/data/{version}/sobjects/{}/{}", record.kind.name(), record.id),
        }),
    );
    for field in fields {
        object.insert(field.name().to_owned(), record.get(field.name()).clone());
    }
    Value::Object(object)
}

fn aggregate(
    records: &[&Record],
    columns: &[Column],
    group: Option<&FieldRef>,
    order: &[(FieldRef, bool, bool)],
) -> Vec<Value> {
    // Groups by value, without case for text as Salesforce does; the first spelling is shown.
    let mut groups: BTreeMap<String, (Value, Vec<&Record>)> = BTreeMap::new();
    let mut first_seen: Vec<String> = Vec::new();
    for record in records {
        let value = group.map_or(Value::Null, |g| record.get(g.name()).clone());
        let key = match &value {
            Value::String(s) => s.to_lowercase(),
            other => other.to_string(),
        };
        let entry = groups.entry(key.clone()).or_insert_with(|| {
            first_seen.push(key);
            (value, Vec::new())
        });
        entry.1.push(record);
    }
    if group.is_none() && groups.is_empty() {
        // An aggregate without GROUP BY always has its one row.
        groups.insert(String::new(), (Value::Null, Vec::new()));
    }
    let mut rows: Vec<(Value, Value)> = groups
        .into_values()
        .map(|(value, members)| {
            let mut object = Map::new();
            object.insert("attributes".to_owned(), json!({"type": "AggregateResult"}));
            for column in columns {
                match column {
                    Column::Field(field, _) => {
                        object.insert(field.name().to_owned(), value.clone());
                    }
                    Column::Count(counted, label) => {
                        let n = members
                            .iter()
                            .filter(|r| counted.as_ref().is_none_or(|f| !r.get(f.name()).is_null()))
                            .count();
                        object.insert(label.clone(), json!(n));
                    }
                }
            }
            (value, Value::Object(object))
        })
        .collect();
    if let Some((_, descending, nulls_first)) = order.first() {
        rows.sort_by(|a, b| compare_for_order(&a.0, &b.0, *descending, *nulls_first));
    }
    rows.into_iter().map(|(_, row)| row).collect()
}

fn compare_for_order(a: &Value, b: &Value, descending: bool, nulls_first: bool) -> Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (false, true) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (false, false) => {
            let ordering = compare_values(a, b);
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        }
    }
}

/// Orders two non-null stored values: numbers numerically, text without case.
fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => schema::to_text(a)
            .to_lowercase()
            .cmp(&schema::to_text(b).to_lowercase()),
    }
}

/// A condition checked against the schema, ready to evaluate.
#[derive(Debug)]
enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Compare {
        field: String,
        op: Op,
        value: Bound,
    },
    In {
        field: String,
        negated: bool,
        values: Vec<Bound>,
    },
    Like {
        field: String,
        pattern: Vec<LikePart>,
    },
}

/// A literal converted for the field it is compared with.
#[derive(Debug, Clone)]
enum Bound {
    Null,
    /// Compared without case.
    Text(String),
    /// An id, compared exactly in its 18-character form.
    Id(String),
    Number(f64),
    Bool(bool),
    /// Milliseconds since the epoch, `[start, end)`: a day, a range of days, or one instant.
    Range(i64, i64),
}

#[derive(Debug, Clone, PartialEq)]
enum LikePart {
    Any,
    One,
    Char(char),
}

fn compile(
    cond: &Cond,
    resolve: &dyn Fn(&soql::Name) -> Result<FieldRef, SfError>,
    now: DateTime<Utc>,
    fail: &dyn Fn(usize, &'static str, String) -> SfError,
) -> Result<Filter, SfError> {
    Ok(match cond {
        Cond::And(terms) => Filter::And(
            terms
                .iter()
                .map(|t| compile(t, resolve, now, fail))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Or(terms) => Filter::Or(
            terms
                .iter()
                .map(|t| compile(t, resolve, now, fail))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Not(inner) => Filter::Not(Box::new(compile(inner, resolve, now, fail)?)),
        Cond::Compare {
            field,
            op,
            value,
            pos,
        } => {
            let resolved = resolve(field)?;
            let value = bound(&resolved, value, now)
                .map_err(|detail| fail(*pos, "INVALID_QUERY_FILTER_OPERATOR", detail))?;
            Filter::Compare {
                field: resolved.name().to_owned(),
                op: *op,
                value,
            }
        }
        Cond::In {
            field,
            negated,
            values,
            pos,
        } => {
            let resolved = resolve(field)?;
            let values = values
                .iter()
                .map(|v| bound(&resolved, v, now))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|detail| fail(*pos, "INVALID_QUERY_FILTER_OPERATOR", detail))?;
            Filter::In {
                field: resolved.name().to_owned(),
                negated: *negated,
                values,
            }
        }
        Cond::Like { field, pattern } => {
            let resolved = resolve(field)?;
            Filter::Like {
                field: resolved.name().to_owned(),
                pattern: like_pattern(pattern),
            }
        }
    })
}

/// Converts a literal for `field`, refusing the types Salesforce refuses.
fn bound(field: &FieldRef, literal: &Literal, now: DateTime<Utc>) -> Result<Bound, String> {
    let name = field.name();
    let kind = field.kind();
    let wrong = |xsd: &str, quoted: bool| {
        format!(
            "value of filter criterion for field '{name}' must be of type {xsd} and should {}be enclosed in quotes",
            if quoted { "" } else { "not " }
        )
    };
    if *literal == Literal::Null {
        return Ok(Bound::Null);
    }
    match kind {
        Kind::Any => Ok(match literal {
            Literal::Text(t) => Bound::Text(t.to_lowercase()),
            Literal::Number(n) => Bound::Number(n.parse().unwrap_or(f64::NAN)),
            Literal::Bool(b) => Bound::Bool(*b),
            Literal::Date(d) => Bound::Text(d.format("%Y-%m-%d").to_string()),
            Literal::DateTime(at) => Bound::Text(schema::datetime(*at).to_lowercase()),
            Literal::Relative(r) => {
                let (start, end) = relative_days(*r, now);
                Bound::Range(day_ms(start), day_ms(end))
            }
            Literal::Null => Bound::Null,
        }),
        Kind::Id | Kind::Reference(_) => match literal {
            Literal::Text(t) => ids::normalize(t)
                .map(Bound::Id)
                .ok_or_else(|| format!("invalid ID field: {t}")),
            _ => Err(wrong("id", true)),
        },
        Kind::Text(_) | Kind::Email | Kind::Picklist(_) => match literal {
            Literal::Text(t) => Ok(Bound::Text(t.to_lowercase())),
            _ => Err(wrong("string", true)),
        },
        Kind::Bool => match literal {
            Literal::Bool(b) => Ok(Bound::Bool(*b)),
            _ => Err(wrong("boolean", false)),
        },
        Kind::Int | Kind::Double => match literal {
            Literal::Number(n) => n
                .parse::<f64>()
                .map(Bound::Number)
                .map_err(|_| wrong(kind.xsd(), false)),
            _ => Err(wrong(kind.xsd(), false)),
        },
        Kind::Date => match literal {
            Literal::Date(d) => Ok(Bound::Range(day_ms(*d), day_ms(next_day(*d)))),
            Literal::Relative(r) => {
                let (start, end) = relative_days(*r, now);
                Ok(Bound::Range(day_ms(start), day_ms(end)))
            }
            _ => Err(wrong("date", false)),
        },
        Kind::DateTime => match literal {
            Literal::DateTime(at) => {
                let ms = at.timestamp_millis();
                Ok(Bound::Range(ms, ms + 1))
            }
            Literal::Relative(r) => {
                let (start, end) = relative_days(*r, now);
                Ok(Bound::Range(day_ms(start), day_ms(end)))
            }
            _ => Err(wrong("dateTime", false)),
        },
    }
}

fn next_day(day: NaiveDate) -> NaiveDate {
    day.checked_add_days(Days::new(1)).unwrap_or(day)
}

/// The days `[start, end)` a relative literal covers, in UTC (Salesforce uses the user's zone).
fn relative_days(relative: Relative, now: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let today = now.date_naive();
    let shift = |d: NaiveDate, days: i64| {
        if days >= 0 {
            d.checked_add_days(Days::new(days.unsigned_abs()))
        } else {
            d.checked_sub_days(Days::new(days.unsigned_abs()))
        }
        .unwrap_or(d)
    };
    match relative {
        Relative::Today => (today, shift(today, 1)),
        Relative::Yesterday => (shift(today, -1), today),
        Relative::Tomorrow => (shift(today, 1), shift(today, 2)),
        Relative::LastNDays(n) => (shift(today, -i64::from(n)), shift(today, 1)),
        Relative::NextNDays(n) => (shift(today, 1), shift(today, 1 + i64::from(n))),
    }
}

fn day_ms(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0)
}

/// A stored date or date-time as milliseconds since the epoch.
fn stored_ms(value: &Value) -> Option<i64> {
    let text = value.as_str()?;
    schema::parse_date(text)
        .map(day_ms)
        .or_else(|| schema::parse_datetime(text).map(|at| at.timestamp_millis()))
}

impl Filter {
    fn matches(&self, record: &Record) -> bool {
        match self {
            Filter::And(terms) => terms.iter().all(|t| t.matches(record)),
            Filter::Or(terms) => terms.iter().any(|t| t.matches(record)),
            Filter::Not(inner) => !inner.matches(record),
            Filter::Compare { field, op, value } => compare(record.get(field), *op, value),
            Filter::In {
                field,
                negated,
                values,
            } => {
                let stored = record.get(field);
                let found = values.iter().any(|v| compare(stored, Op::Eq, v));
                found != *negated
            }
            Filter::Like { field, pattern } => record.get(field).as_str().is_some_and(|text| {
                like(pattern, &text.to_lowercase().chars().collect::<Vec<_>>())
            }),
        }
    }
}

fn compare(stored: &Value, op: Op, bound: &Bound) -> bool {
    let ordering = match bound {
        Bound::Null => {
            return match op {
                Op::Eq => stored.is_null(),
                Op::Ne => !stored.is_null(),
                _ => false,
            };
        }
        _ if stored.is_null() => return op == Op::Ne,
        Bound::Text(text) => Some(schema::to_text(stored).to_lowercase().cmp(text)),
        Bound::Id(id) => Some(schema::to_text(stored).as_str().cmp(id.as_str())),
        Bound::Number(n) => stored
            .as_f64()
            .or_else(|| stored.as_str().and_then(|s| s.parse().ok()))
            .and_then(|v| v.partial_cmp(n)),
        Bound::Bool(b) => stored.as_bool().map(|v| v.cmp(b)),
        Bound::Range(start, end) => {
            let Some(ms) = stored_ms(stored) else {
                return false;
            };
            return match op {
                Op::Eq => *start <= ms && ms < *end,
                Op::Ne => !(*start <= ms && ms < *end),
                Op::Lt => ms < *start,
                Op::Le => ms < *end,
                Op::Gt => ms >= *end,
                Op::Ge => ms >= *start,
            };
        }
    };
    let Some(ordering) = ordering else {
        return op == Op::Ne;
    };
    match op {
        Op::Eq => ordering.is_eq(),
        Op::Ne => ordering.is_ne(),
        Op::Lt => ordering.is_lt(),
        Op::Le => ordering.is_le(),
        Op::Gt => ordering.is_gt(),
        Op::Ge => ordering.is_ge(),
    }
}

fn like_pattern(pattern: &str) -> Vec<LikePart> {
    let mut parts = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        parts.push(match c {
            '%' => LikePart::Any,
            '_' => LikePart::One,
            '\\' => LikePart::Char(chars.next().unwrap_or('\\')),
            c => LikePart::Char(c.to_lowercase().next().unwrap_or(c)),
        });
    }
    parts
}

fn like(pattern: &[LikePart], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((LikePart::Any, rest)) => (0..=text.len()).any(|i| like(rest, &text[i..])),
        Some((LikePart::One, rest)) => !text.is_empty() && like(rest, &text[1..]),
        Some((LikePart::Char(c), rest)) => text.first() == Some(c) && like(rest, &text[1..]),
    }
}

/// Salesforce's SOQL error message: the query's line, a caret under the position, and
/// `ERROR at Row:R:Column:C`, then the detail.
fn position_message(text: &str, pos: usize, detail: &str) -> String {
    let before: Vec<char> = text.chars().take(pos).collect();
    let row = before.iter().filter(|c| **c == '\n').count() + 1;
    let line_start = before.iter().rposition(|c| *c == '\n').map_or(0, |i| i + 1);
    let column = pos - line_start + 1;
    let line: String = text
        .chars()
        .skip(line_start)
        .take_while(|c| *c != '\n')
        .collect();
    format!(
        "\n{line}\n{}^\nERROR at Row:{row}:Column:{column}\n{detail}",
        " ".repeat(column - 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_point_at_the_column() {
        assert_eq!(
            position_message("SELECT Id FRM Lead", 10, "unexpected token: 'FRM'"),
            "\nSELECT Id FRM Lead\n          ^\nERROR at Row:1:Column:11\nunexpected token: 'FRM'"
        );
        assert_eq!(
            position_message("SELECT Id\nFROM Leed", 15, "x"),
            "\nFROM Leed\n     ^\nERROR at Row:2:Column:6\nx"
        );
    }

    #[test]
    fn like_patterns() {
        let text = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(like(&like_pattern("acme%"), &text("acme corp")));
        assert!(like(&like_pattern("%corp"), &text("acme corp")));
        assert!(like(&like_pattern("a_me%"), &text("acme")));
        assert!(!like(&like_pattern("a_me"), &text("acmee")));
        assert!(like(&like_pattern("100\\%"), &text("100%")));
        assert!(!like(&like_pattern("100\\%"), &text("1000")));
    }

    #[test]
    fn relative_dates_cover_whole_days() {
        let now: DateTime<Utc> = "2024-03-10T15:00:00Z".parse().expect("time");
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("day");
        assert_eq!(
            relative_days(Relative::Today, now),
            (day("2024-03-10"), day("2024-03-11"))
        );
        assert_eq!(
            relative_days(Relative::LastNDays(3), now),
            (day("2024-03-07"), day("2024-03-11"))
        );
        assert_eq!(
            relative_days(Relative::NextNDays(2), now),
            (day("2024-03-11"), day("2024-03-13"))
        );
    }
}
