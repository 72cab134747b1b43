//! A span-keeping TOML reader that collects every error instead of stopping at the first.
//!
//! serde's `deny_unknown_fields` reports one fault per file; a user fixing a
//! project wants all of them at once, each with its line, so config structs are
//! read by hand through [`Table`], which records what was asked for and reports
//! the rest as unknown keys.

use std::borrow::Cow;
use std::collections::BTreeMap;

use toml_span::value::ValueInner;
use toml_span::{Span, Value};

use super::{ConfigError, SourceFile};

/// A string value with the place it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
}

/// Reads one file, accumulating errors against it.
pub struct Reader<'s> {
    pub file: &'s SourceFile,
    pub errors: Vec<ConfigError>,
    env: &'s dyn Fn(&str) -> Option<String>,
}

impl<'s> Reader<'s> {
    pub fn new(file: &'s SourceFile, env: &'s dyn Fn(&str) -> Option<String>) -> Self {
        Reader {
            file,
            errors: Vec::new(),
            env,
        }
    }

    /// Parses the file; on a syntax error records it and returns `None`.
    pub fn parse(&mut self) -> Option<Value<'s>> {
        match toml_span::parse(&self.file.text) {
            Ok(v) => Some(v),
            Err(e) => {
                let msg = syntax_message(&e);
                // An error at end of file belongs to the last line with content (an unclosed bracket, say).
                let end = self.file.text.trim_end().len();
                let line = match e.line_info {
                    _ if e.span.start >= end => self.file.line_of(end.saturating_sub(1)),
                    Some((line, _)) => line + 1,
                    None => self.file.line_of(e.span.start),
                };
                self.errors.push(self.file.error_at_line(line, msg));
                None
            }
        }
    }

    pub fn error(&mut self, span: Span, message: impl Into<String>) {
        let line = self.file.line_of(span.start);
        self.errors
            .push(self.file.error_at_line(line, message.into()));
    }

    pub fn line(&self, span: Span) -> usize {
        self.file.line_of(span.start)
    }

    /// Opens a value as a table; reports and returns `None` when it is not one.
    pub fn table<'v>(&mut self, mut value: Value<'v>, what: &str) -> Option<Table<'v>> {
        let span = value.span;
        match value.take() {
            ValueInner::Table(t) => Some(Table {
                span,
                entries: t
                    .into_iter()
                    .map(|(k, v)| (k.name.into_owned(), (k.span, v)))
                    .collect(),
                asked: Vec::new(),
                what: what.to_string(),
            }),
            other => {
                self.error(
                    span,
                    format!("{what} must be a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// Expands `${VAR}` and `${VAR:-default}`; a missing variable without a default is an error naming the key.
    pub fn expand(&mut self, raw: &str, span: Span, key: &str) -> Option<String> {
        match expand_env(raw, self.env) {
            Ok(s) => Some(s.into_owned()),
            Err(EnvError::Missing(var)) => {
                self.error(
                    span,
                    format!("`{key}` references environment variable {var} which is not set (give a default with ${{{var}:-...}})"),
                );
                None
            }
            Err(EnvError::Unterminated) => {
                self.error(span, format!("`{key}` has an unterminated `${{` reference"));
                None
            }
        }
    }

    pub fn string(&mut self, value: Value<'_>, key: &str) -> Option<Located<String>> {
        let span = value.span;
        match value_inner(value) {
            ValueInner::String(s) => {
                let expanded = self.expand(&s, span, key)?;
                Some(Located {
                    value: expanded,
                    line: self.line(span),
                })
            }
            other => {
                self.error(
                    span,
                    format!("`{key}` must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub fn integer(&mut self, value: Value<'_>, key: &str, min: i64, max: i64) -> Option<i64> {
        let span = value.span;
        let n = match value_inner(value) {
            ValueInner::Integer(n) => n,
            // Numbers from the environment arrive as strings.
            ValueInner::String(s) => {
                let expanded = self.expand(&s, span, key)?;
                match expanded.trim().parse::<i64>() {
                    Ok(n) => n,
                    Err(_) => {
                        self.error(
                            span,
                            format!("`{key}` must be an integer, found {expanded:?}"),
                        );
                        return None;
                    }
                }
            }
            other => {
                self.error(
                    span,
                    format!("`{key}` must be an integer, found {}", other.type_str()),
                );
                return None;
            }
        };
        if n < min || n > max {
            self.error(
                span,
                format!("`{key}` must be between {min} and {max}, found {n}"),
            );
            return None;
        }
        Some(n)
    }

    pub fn boolean(&mut self, value: Value<'_>, key: &str) -> Option<bool> {
        let span = value.span;
        match value_inner(value) {
            ValueInner::Boolean(b) => Some(b),
            other => {
                self.error(
                    span,
                    format!("`{key}` must be true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A table of string → string (e.g. a mapping), in file order.
    pub fn string_map(
        &mut self,
        value: Value<'_>,
        key: &str,
    ) -> Option<Vec<(Located<String>, Located<String>)>> {
        let mut t = self.table(value, &format!("`{key}`"))?;
        let mut out = Vec::new();
        for (name, (kspan, v)) in t.take_all() {
            let k = Located {
                value: name.clone(),
                line: self.line(kspan),
            };
            if let Some(v) = self.string(v, &format!("{key}.{name}")) {
                out.push((k, v));
            }
        }
        Some(out)
    }

    /// A string or an array of strings.
    pub fn string_list(&mut self, value: Value<'_>, key: &str) -> Option<Vec<Located<String>>> {
        let span = value.span;
        match value_inner(value) {
            ValueInner::String(s) => {
                let v = self.expand(&s, span, key)?;
                Some(vec![Located {
                    value: v,
                    line: self.line(span),
                }])
            }
            ValueInner::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.push(self.string(item, key)?);
                }
                Some(out)
            }
            other => {
                self.error(
                    span,
                    format!(
                        "`{key}` must be a string or an array of strings, found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// An array of tables (`[[sync]]`).
    pub fn array(&mut self, value: Value<'s>, key: &str) -> Option<Vec<Value<'s>>> {
        let span = value.span;
        match value_inner(value) {
            ValueInner::Array(items) => Some(items),
            other => {
                self.error(
                    span,
                    format!(
                        "`{key}` must be an array of tables ([[{key}]]), found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// Reports keys nobody asked for.
    pub fn finish(&mut self, table: Table<'_>) {
        let asked = table.asked.join(", ");
        for (name, (span, _)) in table.entries {
            self.error(
                span,
                format!(
                    "unknown key `{name}` in {} (expected one of: {asked})",
                    table.what
                ),
            );
        }
    }
}

fn value_inner(mut v: Value<'_>) -> ValueInner<'_> {
    v.take()
}

/// A table being read; keys are taken as they are asked for.
pub struct Table<'v> {
    pub span: Span,
    entries: BTreeMap<String, (Span, Value<'v>)>,
    asked: Vec<&'static str>,
    what: String,
}

impl<'v> Table<'v> {
    pub fn take(&mut self, key: &'static str) -> Option<Value<'v>> {
        self.asked.push(key);
        self.entries.remove(key).map(|(_, v)| v)
    }

    /// Every remaining entry, in file order (for free-form tables such as mappings).
    pub fn take_all(&mut self) -> Vec<(String, (Span, Value<'v>))> {
        let mut all: Vec<_> = std::mem::take(&mut self.entries).into_iter().collect();
        all.sort_by_key(|(_, (span, _))| span.start);
        all
    }
}

fn syntax_message(e: &toml_span::Error) -> String {
    format!("TOML syntax error: {e}")
}

#[derive(Debug, PartialEq, Eq)]
pub enum EnvError {
    Missing(String),
    Unterminated,
}

/// `${VAR}` and `${VAR:-default}` expansion; `$$` is a literal `$`.
pub fn expand_env<'a>(
    raw: &'a str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Cow<'a, str>, EnvError> {
    if !raw.contains('$') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(EnvError::Unterminated)?;
            let inner = &body[..end];
            let (name, default) = match inner.find(":-") {
                Some(p) => (&inner[..p], Some(&inner[p + 2..])),
                None => (inner, None),
            };
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(EnvError::Missing(name.to_string())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_and_defaults() {
        let cases: &[(&str, Result<&str, EnvError>)] = &[
            ("plain", Ok("plain")),
            ("${SET}", Ok("value")),
            ("a-${SET}-b", Ok("a-value-b")),
            ("${UNSET:-dflt}", Ok("dflt")),
            ("${EMPTY:-dflt}", Ok("dflt")),
            ("${SET:-dflt}", Ok("value")),
            ("${UNSET:-}", Ok("")),
            ("$$HOME", Ok("$HOME")),
            ("cost $5", Ok("cost $5")),
            ("${UNSET}", Err(EnvError::Missing("UNSET".into()))),
            ("${SET", Err(EnvError::Unterminated)),
        ];
        for (raw, want) in cases {
            let got = expand_env(raw, &env);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{raw}"),
                Err(e) => assert_eq!(got.as_ref().unwrap_err(), e, "{raw}"),
            }
        }
    }
}
