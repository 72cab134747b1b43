//! Runs a model read-only and renders its rows into the payloads a sync sends; checks models against their schema.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::physical_plan::SendableRecordBatchStream;

use crate::diff::{
    PREFETCH_AHEAD, Payload, Previous, Probe, Record, Row, encode_field, key_hash_bytes,
};
use crate::project::{ConfigError, ModelConfig, Project, SyncConfig};

mod text;
use text::{Buf, Text};

/// A model that failed to plan or run, with the place in its SQL file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ModelError(pub ConfigError);

/// Plans the model's SQL without running it; DDL, DML, COPY and SET are refused.
pub async fn plan(ctx: &SessionContext, model: &ModelConfig) -> Result<DataFrame, ModelError> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    ctx.sql_with_options(&model.sql.text, options)
        .await
        .map_err(|e| ModelError(sql_error(model, &e)))
}

/// Starts the model; batches arrive as the engine produces them.
pub async fn run(
    df: DataFrame,
    model: &ModelConfig,
) -> Result<SendableRecordBatchStream, ModelError> {
    df.execute_stream()
        .await
        .map_err(|e| ModelError(sql_error(model, &e)))
}

/// Starts the model with one stream per output partition of its plan, so the
/// partitions can be hashed in parallel; together they hold every row once, in no
/// order across streams.
pub async fn run_partitioned(
    df: DataFrame,
    model: &ModelConfig,
) -> Result<Vec<SendableRecordBatchStream>, ModelError> {
    df.execute_stream_partitioned()
        .await
        .map_err(|e| ModelError(sql_error(model, &e)))
}

/// Maps an engine error to the model's file, with line and column where the engine knows them.
pub fn sql_error(model: &ModelConfig, e: &DataFusionError) -> ConfigError {
    let (line, column) = position(e, &model.sql.text);
    let raw = e.to_string();
    let message = if raw.contains("not supported")
        && (raw.contains("DDL") || raw.contains("DML") || raw.contains("Statement"))
    {
        format!("models are read-only (one SELECT): {}", clean(&raw))
    } else {
        clean(&raw)
    };
    ConfigError {
        file: model.sql.path.clone(),
        line: line.unwrap_or(0),
        column,
        message,
    }
}

fn clean(raw: &str) -> String {
    let s = raw
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("SQL error: ")
        .trim();
    // sqlparser's Debug form: ParserError("...").
    let s = s
        .strip_prefix("ParserError(\"")
        .and_then(|r| r.strip_suffix("\")"))
        .unwrap_or(s);
    s.to_string()
}

fn position(e: &DataFusionError, sql: &str) -> (Option<usize>, Option<usize>) {
    if let Some(d) = e.diagnostic()
        && let Some(span) = d.span
        && span.start.line > 0
    {
        return (
            Some(span.start.line as usize),
            Some(span.start.column as usize),
        );
    }
    // sqlparser's errors carry "at Line: L, Column: C" in the text.
    let text = e.to_string();
    if let Some(i) = text.find("Line: ") {
        let rest = &text[i + 6..];
        let line: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let column = rest.find("Column: ").map(|j| {
            rest[j + 8..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        });
        return (line.parse().ok(), column.and_then(|c| c.parse().ok()));
    }
    if text.contains("EOF") {
        // The statement ended too soon: the fault is at its last line.
        let lines = sql.trim_end().lines().count().max(1);
        return (Some(lines), None);
    }
    (Some(1), None)
}

/// Plans every model and checks that the columns its config names exist.
pub async fn check_project(ctx: &SessionContext, project: &Project) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for m in &project.models {
        match plan(ctx, m).await {
            Ok(df) => {
                let schema: Schema = df.schema().as_arrow().clone();
                errors.extend(check_columns(m, &schema));
            }
            Err(ModelError(e)) => errors.push(e),
        }
    }
    errors
}

fn check_columns(m: &ModelConfig, schema: &Schema) -> Vec<ConfigError> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut errors = Vec::new();
    let mut need = |col: &str, line: usize, what: &str| {
        if !names.contains(&col) {
            errors.push(ConfigError {
                file: m.toml_file.clone(),
                line,
                column: None,
                message: format!(
                    "{what} column `{col}` is not in the result of {} (columns: {})",
                    m.sql.path.display(),
                    names.join(", ")
                ),
            });
        }
    };
    for k in &m.primary_key {
        need(&k.value, k.line, "primary key");
    }
    for s in &m.syncs {
        need(&s.match_column.value, s.match_column.line, "match");
        for (col, _) in &s.mapping {
            need(&col.value, col.line, "mapped");
        }
    }
    errors
}

/// Turns record batches into [`Row`]s for one sync: only the key, match and mapped columns are read.
///
/// Hashing reads the batch's columns as text in place, writing numbers and times
/// into a small buffer as arrow's cast would ([`Renderer::prepare`],
/// [`Renderer::probe`], `text::Text`): no `String` is built for a row unless it is
/// rendered ([`Renderer::row`]), and the bytes hashed are exactly those
/// [`Renderer::render`] would put in a [`Row`].
pub struct Renderer {
    key_columns: Vec<String>,
    match_column: String,
    /// (model column or None for a constant, property, constant value), sorted by property.
    properties: Vec<(Option<String>, String, Option<String>)>,
    /// Per property, its encoded fingerprint fields that never change: the name, and
    /// for a constant its value too.
    encoded: Vec<Vec<u8>>,
}

/// Separates the parts of a compound key; a control character that never appears in real keys.
const KEY_SEPARATOR: char = '\u{1f}';

/// The key, match and mapped columns of one batch, readable as text (see [`Renderer::prepare`]).
pub struct Prepared {
    rows: usize,
    keys: Vec<Text>,
    matches: Text,
    /// One per property of the renderer; `None` for a constant.
    props: Vec<Option<Text>>,
}

impl Prepared {
    pub fn num_rows(&self) -> usize {
        self.rows
    }
}

/// Buffers for hashing rows, reused from row to row.
#[derive(Default)]
pub struct Scratch {
    payload: Payload,
    key: Vec<u8>,
    text: Buf,
}

impl Renderer {
    pub fn new(model: &ModelConfig, sync: &SyncConfig) -> Self {
        let key_columns: Vec<&str> = model.primary_key.iter().map(|k| k.value.as_str()).collect();
        let mapping: Vec<(&str, &str)> = sync
            .mapping
            .iter()
            .map(|(c, p)| (c.value.as_str(), p.as_str()))
            .collect();
        let constants: Vec<(&str, &str)> = sync
            .set
            .iter()
            .map(|(p, v)| (p.as_str(), v.as_str()))
            .collect();
        Renderer::from_parts(&key_columns, &sync.match_column.value, &mapping, &constants)
    }

    /// A renderer from its parts: key columns, the match column, column → property
    /// mappings and constant properties (property → value).
    pub fn from_parts(
        key_columns: &[&str],
        match_column: &str,
        mapping: &[(&str, &str)],
        constants: &[(&str, &str)],
    ) -> Self {
        let mut properties: Vec<(Option<String>, String, Option<String>)> = mapping
            .iter()
            .map(|&(c, p)| (Some(c.to_owned()), p.to_owned(), None))
            .chain(
                constants
                    .iter()
                    .map(|&(p, v)| (None, p.to_owned(), Some(v.to_owned()))),
            )
            .collect();
        // Sorted so that reordering the config does not change fingerprints.
        properties.sort_by(|a, b| a.1.cmp(&b.1));
        let encoded = properties
            .iter()
            .map(|(column, name, constant)| {
                let mut e = Vec::new();
                encode_field(&mut e, Some(name.as_bytes()));
                if column.is_none() {
                    encode_field(&mut e, constant.as_deref().map(str::as_bytes));
                }
                e
            })
            .collect();
        Renderer {
            key_columns: key_columns.iter().map(|&k| k.to_owned()).collect(),
            match_column: match_column.to_owned(),
            properties,
            encoded,
        }
    }

    /// The batch's key, match and mapped columns, readable as text.
    pub fn prepare(&self, batch: &RecordBatch) -> Result<Prepared, DataFusionError> {
        let column = |name: &str| -> Result<Text, DataFusionError> {
            let col = batch.column_by_name(name).ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "column `{name}` is missing from the model's result"
                ))
            })?;
            Text::new(col)
        };
        Ok(Prepared {
            rows: batch.num_rows(),
            keys: self
                .key_columns
                .iter()
                .map(|k| column(k))
                .collect::<Result<Vec<_>, _>>()?,
            matches: column(&self.match_column)?,
            props: self
                .properties
                .iter()
                .map(|(c, _, _)| c.as_deref().map(column).transpose())
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    /// The key hash of row `i`; `None` when a key column is NULL.
    #[inline]
    fn key_hash(&self, p: &Prepared, i: usize, scratch: &mut Scratch) -> Option<u64> {
        let Scratch { key: buf, text, .. } = scratch;
        if let [only] = p.keys.as_slice() {
            return only.get(i, text).map(|k| key_hash_bytes(k.as_bytes()));
        }
        // The same bytes as the parts joined with the separator, as `row` renders them.
        buf.clear();
        let mut sep = [0u8; 4];
        let sep = KEY_SEPARATOR.encode_utf8(&mut sep).as_bytes();
        for (n, k) in p.keys.iter().enumerate() {
            if n > 0 {
                buf.extend_from_slice(sep);
            }
            buf.extend_from_slice(k.get(i, text)?.as_bytes());
        }
        Some(key_hash_bytes(buf))
    }

    /// Fills `payload` with row `i`'s fingerprinted fields; false when the match value is NULL.
    #[inline]
    fn payload(&self, p: &Prepared, i: usize, scratch: &mut Scratch) -> bool {
        let Scratch { payload, text, .. } = scratch;
        let Some(m) = p.matches.get(i, text) else {
            return false;
        };
        payload.clear();
        payload.field(Some(m.as_bytes()));
        for (encoded, col) in self.encoded.iter().zip(&p.props) {
            payload.encoded(encoded);
            if let Some(col) = col {
                payload.field(col.get(i, text).map(str::as_bytes));
            }
        }
        true
    }

    /// Hashes every row of a prepared batch and looks it up in the last synced state.
    ///
    /// All the batch's hashes come first, then the lookups, each row's prefetched a
    /// few rows ahead ([`Previous::prefetch_directory`], then [`Previous::prefetch`]):
    /// over a large state nearly every lookup misses the cache, and this keeps
    /// several misses in flight at once.
    pub fn probe(
        &self,
        p: &Prepared,
        previous: &Previous,
        full: bool,
        scratch: &mut Scratch,
    ) -> Vec<Probe> {
        let mut out: Vec<Probe> = (0..p.rows)
            .map(|i| {
                let Some(key_hash) = self.key_hash(p, i, scratch) else {
                    return Probe::NullKey;
                };
                if !self.payload(p, i, scratch) {
                    return Probe::NullMatch { key_hash };
                }
                Probe::Row {
                    key_hash,
                    fingerprint: scratch.payload.fingerprint(),
                    stored: None,
                }
            })
            .collect();
        for i in 0..out.len() {
            if let Some(Probe::Row { key_hash, .. }) = out.get(i + 2 * PREFETCH_AHEAD) {
                previous.prefetch_directory(*key_hash);
            }
            if let Some(Probe::Row { key_hash, .. }) = out.get(i + PREFETCH_AHEAD) {
                previous.prefetch(*key_hash);
            }
            if let Probe::Row {
                key_hash,
                fingerprint,
                stored,
            } = &mut out[i]
            {
                // The legacy fingerprint (rarely needed) hashes the payload again.
                *stored = previous.probe(*key_hash, *fingerprint, full, || {
                    self.payload(p, i, scratch);
                    scratch.payload.legacy_fingerprint()
                });
            }
        }
        out
    }

    /// Renders row `i` of a prepared batch.
    pub fn row(&self, p: &Prepared, i: usize) -> Row {
        let mut buf = Buf::default();
        let key = if let [only] = p.keys.as_slice() {
            only.get(i, &mut buf).map(str::to_owned)
        } else {
            p.keys
                .iter()
                .map(|k| k.get(i, &mut buf).map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .map(|parts| parts.join(&KEY_SEPARATOR.to_string()))
        };
        let properties = self
            .properties
            .iter()
            .zip(&p.props)
            .map(|((_, name, constant), col)| {
                let v = match col {
                    Some(c) => c.get(i, &mut buf).map(str::to_owned),
                    None => constant.clone(),
                };
                (name.clone(), v)
            })
            .collect();
        Row {
            key,
            match_value: p.matches.get(i, &mut buf).map(str::to_owned),
            properties,
        }
    }

    /// Renders every row of the batch.
    pub fn render(
        &self,
        batch: &RecordBatch,
        mut out: impl FnMut(Row),
    ) -> Result<(), DataFusionError> {
        let p = self.prepare(batch)?;
        for i in 0..p.rows {
            out(self.row(&p, i));
        }
        Ok(())
    }

    /// The rows of the batch `wanted` accepts by (key hash, fingerprint), rendered as
    /// records to send; the others are hashed in place and never rendered. Rows with
    /// a NULL key or match value are skipped. Same result as [`Renderer::render`]
    /// followed by [`crate::diff::Differ::fingerprint_of`] on every row.
    pub fn records(
        &self,
        batch: &RecordBatch,
        mut wanted: impl FnMut(u64, u64) -> bool,
        mut out: impl FnMut(Record),
    ) -> Result<(), DataFusionError> {
        let p = self.prepare(batch)?;
        let mut scratch = Scratch::default();
        for i in 0..p.rows {
            let Some(kh) = self.key_hash(&p, i, &mut scratch) else {
                continue;
            };
            if !self.payload(&p, i, &mut scratch) {
                continue;
            }
            let fp = scratch.payload.fingerprint();
            if !wanted(kh, fp) {
                continue;
            }
            let row = self.row(&p, i);
            if let (Some(key), Some(match_value)) = (row.key, row.match_value) {
                out(Record {
                    key,
                    key_hash: kh,
                    fingerprint: fp,
                    match_value,
                    properties: row.properties,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
