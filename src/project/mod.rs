//! Loads and validates a handoff project: `handoff.toml`, `models/*.sql|toml`, `connectors/*.toml`.
//!
//! Loading reads the files and nothing else (no warehouse, no network, no
//! database) and returns every fault it finds, each with its file and line.
//! Checks that need the warehouse (SQL planning, column names) live in
//! [`crate::model::check_project`].

mod toml_reader;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use toml_reader::Reader;
pub use toml_reader::{EnvError, Located, expand_env};

/// One fault in the project, pointing at a file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path as the user knows it (relative to the project directory).
    pub file: PathBuf,
    /// 1-based; 0 when the fault concerns the whole file.
    pub line: usize,
    /// 1-based column when known.
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file.display(), self.message),
            (l, Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file.display(), self.message),
            (l, None) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
        }
    }
}

/// Every fault found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A file's text with a line index, so byte offsets become line numbers.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Relative to the project directory, for messages.
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            path: path.into(),
            text,
            line_starts,
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    pub fn error_at_line(&self, line: usize, message: String) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line,
            column: None,
            message,
        }
    }
}

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The only way to read it: at the point it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// File formats the embedded warehouse reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv,
    Ndjson,
}

impl FileFormat {
    pub fn from_extension(ext: &str) -> Option<FileFormat> {
        match ext.to_ascii_lowercase().as_str() {
            "parquet" => Some(FileFormat::Parquet),
            "csv" => Some(FileFormat::Csv),
            "ndjson" | "jsonl" | "json" => Some(FileFormat::Ndjson),
            _ => None,
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => ".parquet",
            FileFormat::Csv => ".csv",
            FileFormat::Ndjson => ".ndjson",
        }
    }
}

impl FromStr for FileFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "parquet" => Ok(FileFormat::Parquet),
            "csv" => Ok(FileFormat::Csv),
            "ndjson" | "jsonl" | "json" => Ok(FileFormat::Ndjson),
            _ => Err(()),
        }
    }
}

/// One explicitly declared warehouse table.
#[derive(Debug, Clone)]
pub struct TableConfig {
    pub name: String,
    /// Absolute: a file or a directory of files.
    pub path: PathBuf,
    /// `None`: taken from the file extensions.
    pub format: Option<FileFormat>,
    pub csv_has_header: bool,
    pub csv_delimiter: u8,
    pub line: usize,
}

/// `[warehouse]`.
#[derive(Debug, Clone, Default)]
pub struct WarehouseConfig {
    /// A directory whose files and sub-directories each become a table.
    pub dir: Option<PathBuf>,
    pub tables: Vec<TableConfig>,
}

/// The CRM a connector talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    HubSpot,
}

/// `connectors/NAME.toml`.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub name: String,
    pub file: PathBuf,
    pub kind: ConnectorKind,
    pub base_url: String,
    pub token: Secret,
    /// Requests allowed per `rate_limit_per_secs`.
    pub rate_limit_requests: u32,
    pub rate_limit_per_secs: u32,
    pub batch_size: usize,
    pub timeout_secs: u64,
    pub max_retries: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// How a sync writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Upsert,
}

/// One `[[sync]]` of a model.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub name: String,
    pub model: String,
    pub connector: String,
    pub object: String,
    pub mode: SyncMode,
    /// Model column holding the value matched against `match_property`.
    pub match_column: Located<String>,
    pub match_property: String,
    /// Model column → CRM property, in file order.
    pub mapping: Vec<(Located<String>, String)>,
    /// Constant properties sent with every added or changed row (e.g. a nurture-exit flag).
    pub set: Vec<(String, String)>,
    /// Properties set on the CRM record when its row leaves the model.
    pub on_remove_set: Vec<(String, String)>,
    pub file: PathBuf,
    pub line: usize,
}

/// `models/NAME.sql` + `models/NAME.toml`.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub sql: SourceFile,
    pub toml_file: PathBuf,
    pub primary_key: Vec<Located<String>>,
    pub schedule: Option<Located<String>>,
    pub syncs: Vec<SyncConfig>,
}

/// A loaded, valid project.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub name: String,
    /// Cron schedules are read in this zone (`[project] timezone`, UTC by default).
    pub timezone: chrono_tz::Tz,
    pub state_url: String,
    pub warehouse: WarehouseConfig,
    pub models: Vec<ModelConfig>,
    pub connectors: BTreeMap<String, ConnectorConfig>,
}

impl Project {
    pub fn syncs(&self) -> impl Iterator<Item = (&ModelConfig, &SyncConfig)> {
        self.models
            .iter()
            .flat_map(|m| m.syncs.iter().map(move |s| (m, s)))
    }

    pub fn find_sync(&self, name: &str) -> Option<(&ModelConfig, &SyncConfig)> {
        self.syncs().find(|(_, s)| s.name == name)
    }
}

/// HubSpot's own batch limit; larger batches are refused by the API.
pub const HUBSPOT_MAX_BATCH: usize = 100;
pub const DEFAULT_STATE_URL: &str = "sqlite://.handoff/state.db";

/// Loads the project in `dir`, reading variables from the process environment.
pub fn load(dir: &Path) -> Result<Project, ConfigErrors> {
    load_with_env(dir, &|k| std::env::var(k).ok())
}

/// Loads the project with an injected environment (tests).
pub fn load_with_env(
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Project, ConfigErrors> {
    let mut errors = Vec::new();
    let dir = dir.to_path_buf();

    let project_file = read_source(&dir, Path::new("handoff.toml"), &mut errors);
    let (name, timezone, state_url, warehouse) = match &project_file {
        Some(f) => read_project_file(&dir, f, env, &mut errors),
        None => (
            String::new(),
            chrono_tz::Tz::UTC,
            DEFAULT_STATE_URL.to_string(),
            WarehouseConfig::default(),
        ),
    };

    let mut connectors = BTreeMap::new();
    let connector_files = list_files(&dir, "connectors", &["toml"], &mut errors);
    // A connector whose file has errors still exists: syncs naming it are not also wrong.
    let connector_names: BTreeSet<String> = connector_files.iter().map(|p| stem(p)).collect();
    for rel in connector_files {
        if let Some(f) = read_source(&dir, &rel, &mut errors) {
            let name = stem(&rel);
            if let Some(c) = read_connector(&name, &f, env, &mut errors) {
                connectors.insert(name, c);
            }
        }
    }

    let mut models = Vec::new();
    let model_files = list_files(&dir, "models", &["sql", "toml"], &mut errors);
    let stems: BTreeSet<String> = model_files.iter().map(|p| stem(p)).collect();
    for name in stems {
        let sql_rel = PathBuf::from("models").join(format!("{name}.sql"));
        let toml_rel = PathBuf::from("models").join(format!("{name}.toml"));
        let has_sql = model_files.contains(&sql_rel);
        let has_toml = model_files.contains(&toml_rel);
        if !has_sql {
            errors.push(whole_file(
                &toml_rel,
                format!("model `{name}` has no SQL: create {}", sql_rel.display()),
            ));
            continue;
        }
        if !has_toml {
            errors.push(whole_file(
                &sql_rel,
                format!(
                    "model `{name}` has no config: create {} with its primary_key and [[sync]]",
                    toml_rel.display()
                ),
            ));
            continue;
        }
        let (Some(sql), Some(cfg)) = (
            read_source(&dir, &sql_rel, &mut errors),
            read_source(&dir, &toml_rel, &mut errors),
        ) else {
            continue;
        };
        if sql.text.trim().is_empty() {
            errors.push(whole_file(
                &sql_rel,
                "the model's SQL is empty: write one SELECT".into(),
            ));
        }
        if let Some(m) = read_model(&name, sql, &cfg, env, &mut errors) {
            models.push(m);
        }
    }
    if models.is_empty() && project_file.is_some() && errors.is_empty() {
        errors.push(whole_file(
            Path::new("models"),
            "the project has no models: add models/NAME.sql and models/NAME.toml".into(),
        ));
    }

    cross_check(&models, &connector_names, &mut errors);

    if errors.is_empty() {
        Ok(Project {
            dir,
            name,
            timezone,
            state_url,
            warehouse,
            models,
            connectors,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn whole_file(path: &Path, message: String) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: None,
        message,
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_source(dir: &Path, rel: &Path, errors: &mut Vec<ConfigError>) -> Option<SourceFile> {
    match std::fs::read_to_string(dir.join(rel)) {
        Ok(text) => Some(SourceFile::new(rel, text)),
        Err(e) => {
            let msg =
                if e.kind() == std::io::ErrorKind::NotFound && rel == Path::new("handoff.toml") {
                    format!(
                        "not found in {}: is this a handoff project? (use --project DIR)",
                        dir.display()
                    )
                } else {
                    format!("cannot read: {e}")
                };
            errors.push(whole_file(rel, msg));
            None
        }
    }
}

/// Files with the given extensions directly under `dir/sub`, relative to `dir`, sorted.
fn list_files(dir: &Path, sub: &str, exts: &[&str], errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let read = match std::fs::read_dir(dir.join(sub)) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(whole_file(Path::new(sub), format!("cannot list: {e}")));
            return Vec::new();
        }
    };
    let mut out: Vec<PathBuf> = read
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
        })
        .filter_map(|p| p.file_name().map(|n| PathBuf::from(sub).join(n)))
        .collect();
    out.sort();
    out
}

fn read_project_file(
    dir: &Path,
    f: &SourceFile,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> (String, chrono_tz::Tz, String, WarehouseConfig) {
    let mut r = Reader::new(f, env);
    let mut name = String::from("handoff");
    let mut timezone = chrono_tz::Tz::UTC;
    let mut state_url = DEFAULT_STATE_URL.to_string();
    let mut warehouse = WarehouseConfig::default();
    if let Some(root) = r.parse()
        && let Some(mut t) = r.table(root, "handoff.toml")
    {
        if let Some(v) = t.take("project")
            && let Some(mut p) = r.table(v, "[project]")
        {
            if let Some(v) = p.take("name").and_then(|v| r.string(v, "project.name")) {
                name = v.value;
            }
            if let Some(v) = p.take("timezone") {
                let span = v.span;
                if let Some(z) = r.string(v, "project.timezone") {
                    match z.value.parse::<chrono_tz::Tz>() {
                        Ok(tz) => timezone = tz,
                        Err(_) => r.error(
                            span,
                            format!(
                                "`project.timezone` {:?} is not an IANA time zone (e.g. \"Europe/Berlin\", \"UTC\")",
                                z.value
                            ),
                        ),
                    }
                }
            }
            r.finish(p);
        }
        if let Some(v) = t.take("state")
            && let Some(mut s) = r.table(v, "[state]")
        {
            if let Some(v) = s.take("url") {
                let span = v.span;
                if let Some(u) = r.string(v, "state.url") {
                    if u.value.starts_with("sqlite:")
                        || u.value.starts_with("postgres:")
                        || u.value.starts_with("postgresql:")
                    {
                        state_url = u.value;
                    } else {
                        r.error(
                            span,
                            format!(
                                "`state.url` must start with sqlite:// or postgres://, found {:?}",
                                u.value
                            ),
                        );
                    }
                }
            }
            r.finish(s);
        }
        if let Some(v) = t.take("warehouse")
            && let Some(mut w) = r.table(v, "[warehouse]")
        {
            if let Some(v) = w.take("path").and_then(|v| r.string(v, "warehouse.path")) {
                warehouse.dir = Some(dir.join(v.value));
            }
            if let Some(v) = w.take("tables")
                && let Some(mut tables) = r.table(v, "[warehouse.tables]")
            {
                for (tname, (_, tv)) in tables.take_all() {
                    if let Some(tc) = read_table(dir, &mut r, &tname, tv) {
                        warehouse.tables.push(tc);
                    }
                }
            }
            r.finish(w);
        }
        r.finish(t);
    }
    errors.append(&mut r.errors);
    (name, timezone, state_url, warehouse)
}

fn read_table(
    dir: &Path,
    r: &mut Reader<'_>,
    name: &str,
    v: toml_span::Value<'_>,
) -> Option<TableConfig> {
    let key = format!("warehouse.tables.{name}");
    let span = v.span;
    let mut t = r.table(v, &format!("[{key}]"))?;
    let line = r.line(span);
    let path = match t.take("path") {
        Some(v) => r.string(v, &format!("{key}.path")),
        None => {
            r.error(
                span,
                format!("[{key}] needs `path` (a file or a directory of files)"),
            );
            None
        }
    };
    let mut format = None;
    if let Some(v) = t.take("format") {
        let fspan = v.span;
        if let Some(s) = r.string(v, &format!("{key}.format")) {
            match s.value.parse() {
                Ok(f) => format = Some(f),
                Err(()) => r.error(
                    fspan,
                    format!(
                        "`{key}.format` must be parquet, csv or ndjson, found {:?}",
                        s.value
                    ),
                ),
            }
        }
    }
    let csv_has_header = t
        .take("has_header")
        .and_then(|v| r.boolean(v, &format!("{key}.has_header")))
        .unwrap_or(true);
    let mut csv_delimiter = b',';
    if let Some(v) = t.take("delimiter") {
        let dspan = v.span;
        if let Some(s) = r.string(v, &format!("{key}.delimiter")) {
            if s.value.len() == 1 {
                csv_delimiter = s.value.as_bytes()[0];
            } else {
                r.error(
                    dspan,
                    format!("`{key}.delimiter` must be one ASCII character"),
                );
            }
        }
    }
    r.finish(t);
    Some(TableConfig {
        name: name.to_string(),
        path: dir.join(path?.value),
        format,
        csv_has_header,
        csv_delimiter,
        line,
    })
}

fn read_connector(
    name: &str,
    f: &SourceFile,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<ConnectorConfig> {
    let mut r = Reader::new(f, env);
    let out = (|| {
        let root = r.parse()?;
        let root_span = root.span;
        let mut t = r.table(root, f.path.display().to_string().as_str())?;
        let kind = match t.take("kind") {
            Some(v) => {
                let span = v.span;
                match r.string(v, "kind").map(|k| k.value).as_deref() {
                    Some("hubspot") => Some(ConnectorKind::HubSpot),
                    None => None,
                    Some(other) => {
                        r.error(
                            span,
                            format!(
                                "unknown connector kind {other:?}: supported kinds are \"hubspot\""
                            ),
                        );
                        None
                    }
                }
            }
            None => {
                r.error(root_span, "`kind` is required (\"hubspot\")");
                None
            }
        };
        let base_url = match t.take("base_url") {
            Some(v) => {
                let span = v.span;
                let u = r.string(v, "base_url").unwrap_or(Located {
                    value: "http://".into(),
                    line: 0,
                });
                if u.line == 0 {
                    None
                } else if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
                    r.error(
                        span,
                        format!(
                            "`base_url` must be an http:// or https:// URL, found {:?}",
                            u.value
                        ),
                    );
                    None
                } else {
                    Some(u.value.trim_end_matches('/').to_string())
                }
            }
            None => {
                r.error(root_span, "`base_url` is required");
                None
            }
        };
        let token = match t.take("token") {
            Some(v) => {
                let span = v.span;
                let raw = match &v.as_str() {
                    Some(s) => s.to_string(),
                    None => String::new(),
                };
                let tok = r.string(v, "token");
                if tok.is_none() {
                    None
                } else if !raw.contains("${") && !raw.is_empty() {
                    // A literal token in a file that gets committed is a leak waiting to happen.
                    r.error(
                        span,
                        "`token` must come from the environment, e.g. token = \"${HUBSPOT_TOKEN}\"",
                    );
                    None
                } else {
                    match tok {
                        Some(t) if !t.value.is_empty() => Some(Secret::new(t.value)),
                        _ => {
                            r.error(span, "`token` is empty");
                            None
                        }
                    }
                }
            }
            None => {
                r.error(
                    root_span,
                    "`token` is required, e.g. token = \"${HUBSPOT_TOKEN}\"",
                );
                None
            }
        };
        let mut requests = 100;
        let mut per_secs = 10;
        if let Some(v) = t.take("rate_limit")
            && let Some(mut rl) = r.table(v, "[rate_limit]")
        {
            if let Some(v) = rl
                .take("requests")
                .and_then(|v| r.integer(v, "rate_limit.requests", 1, 1_000_000))
            {
                requests = v as u32;
            }
            if let Some(v) = rl
                .take("per_secs")
                .and_then(|v| r.integer(v, "rate_limit.per_secs", 1, 86_400))
            {
                per_secs = v as u32;
            }
            r.finish(rl);
        }
        let batch_size = t
            .take("batch_size")
            .and_then(|v| r.integer(v, "batch_size", 1, HUBSPOT_MAX_BATCH as i64))
            .unwrap_or(HUBSPOT_MAX_BATCH as i64) as usize;
        let timeout_secs = t
            .take("timeout_secs")
            .and_then(|v| r.integer(v, "timeout_secs", 1, 600))
            .unwrap_or(30) as u64;
        let max_retries = t
            .take("max_retries")
            .and_then(|v| r.integer(v, "max_retries", 0, 100))
            .unwrap_or(6) as u32;
        let concurrency = t
            .take("concurrency")
            .and_then(|v| r.integer(v, "concurrency", 1, 64))
            .unwrap_or(4) as usize;
        r.finish(t);
        Some(ConnectorConfig {
            name: name.to_string(),
            file: f.path.clone(),
            kind: kind?,
            base_url: base_url?,
            token: token?,
            rate_limit_requests: requests,
            rate_limit_per_secs: per_secs,
            batch_size,
            timeout_secs,
            max_retries,
            concurrency,
        })
    })();
    let had_errors = !r.errors.is_empty();
    errors.append(&mut r.errors);
    if had_errors { None } else { out }
}

fn read_model(
    name: &str,
    sql: SourceFile,
    f: &SourceFile,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<ModelConfig> {
    let mut r = Reader::new(f, env);
    let mut syncs = Vec::new();
    let mut primary_key = Vec::new();
    let mut schedule = None;
    if let Some(root) = r.parse() {
        let root_span = root.span;
        if let Some(mut t) = r.table(root, &f.path.display().to_string()) {
            match t.take("primary_key") {
                Some(v) => {
                    if let Some(pk) = r.string_list(v, "primary_key") {
                        primary_key = pk;
                    }
                }
                None => r.error(
                    root_span,
                    "`primary_key` is required: the model column(s) that identify a row",
                ),
            }
            if let Some(v) = t.take("schedule") {
                let span = v.span;
                if let Some(s) = r.string(v, "schedule") {
                    match crate::scheduler::Schedule::parse(&s.value) {
                        Ok(_) => schedule = Some(s),
                        Err(why) => r.error(span, format!("`schedule` {:?} {why}", s.value)),
                    }
                }
            }
            let sync_values = match t.take("sync") {
                Some(v) => r.array(v, "sync").unwrap_or_default(),
                None => {
                    r.error(root_span, "the model has no [[sync]]: add at least one");
                    Vec::new()
                }
            };
            let count = sync_values.len();
            for v in sync_values {
                if let Some(s) = read_sync(&mut r, name, count, v) {
                    syncs.push(s);
                }
            }
            r.finish(t);
        }
    }
    let had_errors = !r.errors.is_empty();
    errors.append(&mut r.errors);
    if had_errors {
        return None;
    }
    Some(ModelConfig {
        name: name.to_string(),
        sql,
        toml_file: f.path.clone(),
        primary_key,
        schedule,
        syncs,
    })
}

fn read_sync(
    r: &mut Reader<'_>,
    model: &str,
    count: usize,
    v: toml_span::Value<'_>,
) -> Option<SyncConfig> {
    let span = v.span;
    let line = r.line(span);
    let mut t = r.table(v, "[[sync]]")?;
    let mut ok = true;
    let name = match t.take("name") {
        Some(v) => r.string(v, "sync.name").map(|s| s.value),
        None if count == 1 => Some(model.to_string()),
        None => {
            r.error(
                span,
                format!("model `{model}` has {count} syncs: give each a `name`"),
            );
            None
        }
    };
    let req = |r: &mut Reader<'_>,
               t: &mut toml_reader::Table<'_>,
               key: &'static str,
               hint: &str|
     -> Option<Located<String>> {
        match t.take(key) {
            Some(v) => r.string(v, &format!("sync.{key}")),
            None => {
                r.error(span, format!("[[sync]] needs `{key}` ({hint})"));
                None
            }
        }
    };
    let connector = req(r, &mut t, "connector", "the name of a file in connectors/");
    let object = req(r, &mut t, "object", "e.g. \"contacts\"");
    if let Some(o) = &object
        && o.value != "contacts"
    {
        r.errors.push(r.file.error_at_line(
            o.line,
            format!(
                "object {:?} is not supported by the HubSpot connector yet: use \"contacts\"",
                o.value
            ),
        ));
        ok = false;
    }
    let mut mode = SyncMode::Upsert;
    if let Some(v) = t.take("mode") {
        let mspan = v.span;
        if let Some(m) = r.string(v, "sync.mode") {
            match m.value.as_str() {
                "upsert" => mode = SyncMode::Upsert,
                "update" | "create" | "mirror" => {
                    r.error(
                        mspan,
                        format!("mode {:?} is not available yet: use \"upsert\"", m.value),
                    );
                    ok = false;
                }
                other => {
                    r.error(mspan, format!("unknown mode {other:?}: use \"upsert\""));
                    ok = false;
                }
            }
        }
    }
    let mut match_column = None;
    let mut match_property = None;
    match t.take("match") {
        Some(v) => {
            if let Some(mut m) = r.table(v, "`match`") {
                match_column = m.take("column").and_then(|v| r.string(v, "match.column"));
                match_property = m
                    .take("property")
                    .and_then(|v| r.string(v, "match.property"));
                if match_column.is_none() || match_property.is_none() {
                    r.error(m.span, "`match` needs `column` (model column) and `property` (a unique CRM property, e.g. \"email\")");
                }
                r.finish(m);
            }
        }
        None => r.error(
            span,
            "[[sync]] needs `match = { column = \"email\", property = \"email\" }`",
        ),
    }
    let mapping = match t.take("mapping") {
        Some(v) => r.string_map(v, "mapping").unwrap_or_default(),
        None => Vec::new(),
    };
    let set = match t.take("set") {
        Some(v) => r.string_map(v, "set").unwrap_or_default(),
        None => Vec::new(),
    };
    let mut on_remove_set = Vec::new();
    if let Some(v) = t.take("on_remove")
        && let Some(mut o) = r.table(v, "`on_remove`")
    {
        if let Some(v) = o.take("set") {
            on_remove_set = r.string_map(v, "on_remove.set").unwrap_or_default();
        }
        r.finish(o);
    }
    // Two sources for one property would make the payload depend on map order.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (col, prop) in &mapping {
        if let Some(prev) = seen.insert(prop.value.as_str(), col.line) {
            r.errors.push(r.file.error_at_line(
                prop.line,
                format!(
                    "property {:?} is mapped twice (also on line {prev})",
                    prop.value
                ),
            ));
            ok = false;
        }
    }
    for (prop, _) in &set {
        if let Some(prev) = seen.insert(prop.value.as_str(), prop.line) {
            r.errors.push(r.file.error_at_line(
                prop.line,
                format!(
                    "property {:?} is both mapped and set (line {prev})",
                    prop.value
                ),
            ));
            ok = false;
        }
    }
    if mapping.is_empty() && set.is_empty() {
        r.error(span, "[[sync]] sends nothing: add `mapping = { column = \"property\" }` or `set = { property = \"value\" }`");
        ok = false;
    }
    r.finish(t);
    if !ok {
        return None;
    }
    Some(SyncConfig {
        name: name?,
        model: model.to_string(),
        connector: connector?.value,
        object: object?.value,
        mode,
        match_column: match_column?,
        match_property: match_property?.value,
        mapping: mapping.into_iter().map(|(c, p)| (c, p.value)).collect(),
        set: set.into_iter().map(|(p, v)| (p.value, v.value)).collect(),
        on_remove_set: on_remove_set
            .into_iter()
            .map(|(p, v)| (p.value, v.value))
            .collect(),
        file: r.file.path.clone(),
        line,
    })
}

fn cross_check(
    models: &[ModelConfig],
    connectors: &BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) {
    let mut names: BTreeMap<&str, (&Path, usize)> = BTreeMap::new();
    for m in models {
        for s in &m.syncs {
            if !connectors.contains(&s.connector) {
                let known: Vec<&str> = connectors.iter().map(|k| k.as_str()).collect();
                errors.push(ConfigError {
                    file: s.file.clone(),
                    line: s.line,
                    column: None,
                    message: format!(
                        "unknown connector {:?}: no connectors/{}.toml (known: {})",
                        s.connector,
                        s.connector,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                });
            }
            if let Some((file, line)) = names.insert(&s.name, (&s.file, s.line)) {
                errors.push(ConfigError {
                    file: s.file.clone(),
                    line: s.line,
                    column: None,
                    message: format!(
                        "sync name {:?} is already used at {}:{line}",
                        s.name,
                        file.display()
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
