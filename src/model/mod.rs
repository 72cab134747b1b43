//! Runs a model read-only and renders its rows into the payloads a sync sends; checks models against their schema.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::physical_plan::SendableRecordBatchStream;

use crate::diff::Row;
use crate::project::{ConfigError, ModelConfig, Project, SyncConfig};

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
pub struct Renderer {
    key_columns: Vec<String>,
    match_column: String,
    /// (model column or None for a constant, property, constant value), sorted by property.
    properties: Vec<(Option<String>, String, Option<String>)>,
}

/// Separates the parts of a compound key; a control character that never appears in real keys.
const KEY_SEPARATOR: char = '\u{1f}';

impl Renderer {
    pub fn new(model: &ModelConfig, sync: &SyncConfig) -> Self {
        let mut properties: Vec<(Option<String>, String, Option<String>)> = sync
            .mapping
            .iter()
            .map(|(c, p)| (Some(c.value.clone()), p.clone(), None))
            .chain(
                sync.set
                    .iter()
                    .map(|(p, v)| (None, p.clone(), Some(v.clone()))),
            )
            .collect();
        // Sorted so that reordering the config does not change fingerprints.
        properties.sort_by(|a, b| a.1.cmp(&b.1));
        Renderer {
            key_columns: model.primary_key.iter().map(|k| k.value.clone()).collect(),
            match_column: sync.match_column.value.clone(),
            properties,
        }
    }

    /// Renders every row of the batch.
    pub fn render(
        &self,
        batch: &RecordBatch,
        mut out: impl FnMut(Row),
    ) -> Result<(), DataFusionError> {
        let column = |name: &str| -> Result<Strings, DataFusionError> {
            let col = batch.column_by_name(name).ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "column `{name}` is missing from the model's result"
                ))
            })?;
            Strings::new(col)
        };
        let keys = self
            .key_columns
            .iter()
            .map(|k| column(k))
            .collect::<Result<Vec<_>, _>>()?;
        let matches = column(&self.match_column)?;
        let props = self
            .properties
            .iter()
            .map(|(c, _, _)| c.as_deref().map(column).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            let key = if keys.len() == 1 {
                keys[0].get(i)
            } else {
                let mut parts = Vec::with_capacity(keys.len());
                for k in &keys {
                    parts.push(k.get(i));
                }
                parts
                    .into_iter()
                    .collect::<Option<Vec<String>>>()
                    .map(|p| p.join(&KEY_SEPARATOR.to_string()))
            };
            let properties = self
                .properties
                .iter()
                .zip(&props)
                .map(|((_, name, constant), col)| {
                    let v = match col {
                        Some(c) => c.get(i),
                        None => constant.clone(),
                    };
                    (name.clone(), v)
                })
                .collect();
            out(Row {
                key,
                match_value: matches.get(i),
                properties,
            });
        }
        Ok(())
    }
}

/// A column rendered as text, as the CRM receives it (HubSpot takes every property as a string).
enum Strings {
    Utf8(ArrayRef),
    View(ArrayRef),
    Formatted(ArrayRef),
}

impl Strings {
    fn new(col: &ArrayRef) -> Result<Self, DataFusionError> {
        match col.data_type() {
            DataType::Utf8 => Ok(Strings::Utf8(Arc::clone(col))),
            DataType::Utf8View => Ok(Strings::View(Arc::clone(col))),
            t if t.is_nested() => Ok(Strings::Formatted(Arc::clone(col))),
            _ => match cast(col, &DataType::Utf8) {
                Ok(c) => Ok(Strings::Utf8(c)),
                Err(_) => Ok(Strings::Formatted(Arc::clone(col))),
            },
        }
    }

    fn get(&self, i: usize) -> Option<String> {
        match self {
            Strings::Utf8(a) => {
                if a.is_null(i) {
                    None
                } else {
                    Some(a.as_string::<i32>().value(i).to_string())
                }
            }
            Strings::View(a) => {
                if a.is_null(i) {
                    None
                } else {
                    Some(a.as_string_view().value(i).to_string())
                }
            }
            Strings::Formatted(a) => {
                if a.is_null(i) {
                    return None;
                }
                let opts = FormatOptions::default();
                let f = ArrayFormatter::try_new(a.as_ref(), &opts).ok()?;
                Some(f.value(i).to_string())
            }
        }
    }
}
