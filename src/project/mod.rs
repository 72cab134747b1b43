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
    /// The account's API limits: a tier preset, corrected by explicit numbers.
    pub budget: RateBudget,
    /// The tier preset the budget started from, when one was named.
    pub tier: Option<String>,
    /// The zone whose midnight resets the daily limit (HubSpot: the account's time zone).
    pub account_timezone: chrono_tz::Tz,
    pub batch_size: usize,
    pub timeout_secs: u64,
    pub max_retries: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How long a new record takes to show in search: reconciling a task whose
    /// create got no answer waits this long before searching for it.
    pub search_settle_ms: u64,
}

/// An account's API limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    /// Requests per `per_secs` rolling window.
    pub requests: u32,
    pub per_secs: u32,
    /// Requests per day; `0` means handoff does not count (the CRM's answers still pause it).
    pub daily: u64,
    /// The search endpoints' own limit, requests per second.
    pub search_per_second: u32,
}

/// HubSpot's published limits for private apps (per account) and OAuth apps.
pub const HUBSPOT_TIERS: [(&str, RateBudget); 4] = [
    (
        "starter",
        RateBudget {
            requests: 100,
            per_secs: 10,
            daily: 250_000,
            search_per_second: 4,
        },
    ),
    (
        "professional",
        RateBudget {
            requests: 190,
            per_secs: 10,
            daily: 625_000,
            search_per_second: 4,
        },
    ),
    (
        "enterprise",
        RateBudget {
            requests: 190,
            per_secs: 10,
            daily: 1_000_000,
            search_per_second: 4,
        },
    ),
    (
        "oauth",
        RateBudget {
            requests: 110,
            per_secs: 10,
            daily: 0,
            search_per_second: 4,
        },
    ),
];

/// How a sync writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Create or update, matched on a unique property.
    Upsert,
    /// Update existing records only; a missing record is a rejection.
    Update,
    /// Create a record per new row; later changes update the record handoff created.
    Create,
    /// Upsert (or create, without `match`), and archive the records handoff wrote when their rows leave the model.
    Mirror,
}

impl SyncMode {
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Upsert => "upsert",
            SyncMode::Update => "update",
            SyncMode::Create => "create",
            SyncMode::Mirror => "mirror",
        }
    }
}

/// How a row finds its CRM record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOn {
    /// A unique property (`email`, `domain`, or a custom unique property).
    Property(String),
    /// The CRM's record id (`hs_object_id`), held in the match column.
    RecordId,
    /// Nothing: `create` mode makes a new record and remembers its id.
    Nothing,
}

/// Whether a sync may replace an owner the record already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerPolicy {
    /// Set the owner only where the record has none (a lead has one active owner).
    FillEmpty,
    Overwrite,
}

/// The CRM property that holds a record's owner.
pub const OWNER_PROPERTY: &str = "hubspot_owner_id";

/// A text with `{{name}}` placeholders filled from a row's mapped columns or properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    /// The CRM property whose value is inserted.
    Property(String),
}

impl Template {
    /// Fills the placeholders; a NULL value renders as the empty string.
    pub fn render(&self, properties: &[(String, Option<String>)]) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Property(name) => {
                    if let Some((_, Some(v))) = properties.iter().find(|(k, _)| k == name) {
                        out.push_str(v);
                    }
                }
            }
        }
        out
    }
}

/// A follow-up task created once per handed-off record.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    pub subject: Template,
    pub body: Option<Template>,
    /// Due this long after the handoff.
    pub due_after_secs: u64,
    /// `HIGH`, `MEDIUM` or `LOW`.
    pub priority: String,
    /// `CALL`, `EMAIL` or `TODO`.
    pub task_type: String,
    /// The task property that carries handoff's idempotency key (a custom property in the account).
    pub key_property: String,
    /// The HubSpot-defined association type from the task to the synced record.
    pub association_type_id: i32,
}

/// One `[[sync]]` of a model.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub name: String,
    pub model: String,
    pub connector: String,
    /// `contacts`, `companies`, `deals` or `leads`.
    pub object: String,
    pub mode: SyncMode,
    /// Model column holding the value matched on (the first key column when nothing is matched).
    pub match_column: Located<String>,
    pub match_on: MatchOn,
    /// Model column → CRM property, in file order.
    pub mapping: Vec<(Located<String>, String)>,
    /// Constant properties sent with every added or changed row (e.g. a nurture-exit flag).
    pub set: Vec<(String, String)>,
    /// Properties set on the CRM record when its row leaves the model.
    pub on_remove_set: Vec<(String, String)>,
    pub owner_policy: OwnerPolicy,
    /// Set to the handoff time on a record's first handoff.
    pub handoff_timestamp: Option<String>,
    pub task: Option<TaskConfig>,
    pub file: PathBuf,
    pub line: usize,
}

impl SyncConfig {
    /// Whether the sync writes an owner (mapped or set).
    pub fn sets_owner(&self) -> bool {
        self.mapping.iter().any(|(_, p)| p == OWNER_PROPERTY)
            || self.set.iter().any(|(p, _)| p == OWNER_PROPERTY)
    }
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
        let mut tier = None;
        let mut budget = HUBSPOT_TIERS[0].1;
        if let Some(v) = t.take("tier") {
            let span = v.span;
            if let Some(name) = r.string(v, "tier") {
                match HUBSPOT_TIERS.iter().find(|(n, _)| *n == name.value) {
                    Some((n, b)) => {
                        budget = *b;
                        tier = Some(n.to_string());
                    }
                    None => r.error(
                        span,
                        format!(
                            "unknown tier {:?}: use starter, professional, enterprise or oauth (or set [rate_limit] numbers)",
                            name.value
                        ),
                    ),
                }
            }
        }
        if let Some(v) = t.take("rate_limit")
            && let Some(mut rl) = r.table(v, "[rate_limit]")
        {
            if let Some(v) = rl
                .take("requests")
                .and_then(|v| r.integer(v, "rate_limit.requests", 1, 1_000_000))
            {
                budget.requests = v as u32;
            }
            if let Some(v) = rl
                .take("per_secs")
                .and_then(|v| r.integer(v, "rate_limit.per_secs", 1, 86_400))
            {
                budget.per_secs = v as u32;
            }
            if let Some(v) = rl
                .take("daily")
                .and_then(|v| r.integer(v, "rate_limit.daily", 0, i64::MAX))
            {
                budget.daily = v as u64;
            }
            if let Some(v) = rl
                .take("search_per_second")
                .and_then(|v| r.integer(v, "rate_limit.search_per_second", 1, 1_000))
            {
                budget.search_per_second = v as u32;
            }
            r.finish(rl);
        }
        let mut account_timezone = chrono_tz::Tz::UTC;
        if let Some(v) = t.take("account_timezone") {
            let span = v.span;
            if let Some(z) = r.string(v, "account_timezone") {
                match z.value.parse::<chrono_tz::Tz>() {
                    Ok(tz) => account_timezone = tz,
                    Err(_) => r.error(
                        span,
                        format!(
                            "unknown time zone {:?}: use an IANA name such as \"America/New_York\"",
                            z.value
                        ),
                    ),
                }
            }
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
        // Enough requests in flight to use the whole budget even at a second per request.
        let default_concurrency =
            (budget.requests as f64 / budget.per_secs.max(1) as f64).ceil() as i64;
        let concurrency = t
            .take("concurrency")
            .and_then(|v| r.integer(v, "concurrency", 1, 64))
            .unwrap_or(default_concurrency.clamp(4, 64)) as usize;
        let search_settle_ms = t
            .take("search_settle_ms")
            .and_then(|v| r.integer(v, "search_settle_ms", 0, 600_000))
            .unwrap_or(10_000) as u64;
        r.finish(t);
        Some(ConnectorConfig {
            name: name.to_string(),
            file: f.path.clone(),
            kind: kind?,
            base_url: base_url?,
            token: token?,
            budget,
            tier,
            account_timezone,
            batch_size,
            timeout_secs,
            max_retries,
            concurrency,
            search_settle_ms,
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
                if let Some(s) = read_sync(&mut r, name, count, v, primary_key.first()) {
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
    first_key: Option<&Located<String>>,
) -> Option<SyncConfig> {
    let model_key = first_key.cloned();
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
        && !HUBSPOT_OBJECTS.contains(&o.value.as_str())
    {
        r.errors.push(r.file.error_at_line(
            o.line,
            format!(
                "object {:?} is not supported: use one of {}",
                o.value,
                HUBSPOT_OBJECTS.join(", ")
            ),
        ));
        ok = false;
    }
    let mut mode = SyncMode::Upsert;
    let mut mode_line = line;
    if let Some(v) = t.take("mode") {
        let mspan = v.span;
        if let Some(m) = r.string(v, "sync.mode") {
            mode_line = m.line;
            match m.value.as_str() {
                "upsert" => mode = SyncMode::Upsert,
                "update" => mode = SyncMode::Update,
                "create" => mode = SyncMode::Create,
                "mirror" => mode = SyncMode::Mirror,
                other => {
                    r.error(
                        mspan,
                        format!("unknown mode {other:?}: use upsert, update, create or mirror"),
                    );
                    ok = false;
                }
            }
        }
    }
    let mut match_column = None;
    let mut match_on = MatchOn::Nothing;
    match t.take("match") {
        Some(v) => {
            if let Some(mut m) = r.table(v, "`match`") {
                match_column = m.take("column").and_then(|v| r.string(v, "match.column"));
                let property = m
                    .take("property")
                    .and_then(|v| r.string(v, "match.property"));
                match (&match_column, property) {
                    (Some(_), Some(p)) => {
                        match_on = if RECORD_ID_PROPERTIES.contains(&p.value.as_str()) {
                            MatchOn::RecordId
                        } else {
                            MatchOn::Property(p.value)
                        };
                    }
                    _ => r.error(m.span, "`match` needs `column` (model column) and `property` (a unique CRM property such as \"email\", or \"hs_object_id\" for record ids)"),
                }
                r.finish(m);
            }
        }
        None if matches!(mode, SyncMode::Create | SyncMode::Mirror) => {}
        None => r.error(
            span,
            "[[sync]] needs `match = { column = \"email\", property = \"email\" }`",
        ),
    }
    let mode_error = match (&mode, &match_on) {
        (SyncMode::Upsert, MatchOn::RecordId) => Some(
            "mode \"upsert\" needs a unique property to match on; to write to records by their id use mode = \"update\"",
        ),
        (SyncMode::Create, MatchOn::Property(_) | MatchOn::RecordId) => Some(
            "mode \"create\" never matches existing records: drop `match`, or use mode = \"upsert\"",
        ),
        _ => None,
    };
    if let Some(msg) = mode_error {
        r.errors
            .push(r.file.error_at_line(mode_line, msg.to_string()));
        ok = false;
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
    let mut owner_policy = OwnerPolicy::FillEmpty;
    if let Some(v) = t.take("owner_policy") {
        let pspan = v.span;
        if let Some(p) = r.string(v, "sync.owner_policy") {
            match p.value.as_str() {
                "fill_empty" => owner_policy = OwnerPolicy::FillEmpty,
                "overwrite" => owner_policy = OwnerPolicy::Overwrite,
                other => {
                    r.error(
                        pspan,
                        format!(
                            "unknown owner_policy {other:?}: use \"fill_empty\" or \"overwrite\""
                        ),
                    );
                    ok = false;
                }
            }
        }
    }
    let handoff_timestamp = t
        .take("handoff_timestamp")
        .and_then(|v| r.string(v, "sync.handoff_timestamp"));
    let task = match t.take("task") {
        Some(v) => {
            let tspan = v.span;
            let props: Vec<(&str, &str)> = mapping
                .iter()
                .map(|(c, p)| (c.value.as_str(), p.value.as_str()))
                .chain(
                    set.iter()
                        .map(|(p, _)| (p.value.as_str(), p.value.as_str())),
                )
                .collect();
            let object_name = object.as_ref().map(|o| o.value.as_str()).unwrap_or("");
            let t = read_task(r, v, &props, object_name);
            if t.is_none() {
                ok = false;
            }
            let _ = tspan;
            t
        }
        None => None,
    };
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
    if mode == SyncMode::Mirror && !on_remove_set.is_empty() {
        r.errors.push(r.file.error_at_line(
            mode_line,
            "mode \"mirror\" archives the records whose rows leave the model: drop `on_remove`, or use mode = \"upsert\"".to_string(),
        ));
        ok = false;
    }
    if let Some(h) = &handoff_timestamp
        && let Some(prev) = seen.get(h.value.as_str())
    {
        r.errors.push(r.file.error_at_line(
            h.line,
            format!(
                "handoff_timestamp property {:?} is also mapped or set (line {prev})",
                h.value
            ),
        ));
        ok = false;
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
        match_column: match_column.or_else(|| model_key.clone())?,
        match_on,
        mapping: mapping.into_iter().map(|(c, p)| (c, p.value)).collect(),
        set: set.into_iter().map(|(p, v)| (p.value, v.value)).collect(),
        on_remove_set: on_remove_set
            .into_iter()
            .map(|(p, v)| (p.value, v.value))
            .collect(),
        owner_policy,
        handoff_timestamp: handoff_timestamp.map(|h| h.value),
        task,
        file: r.file.path.clone(),
        line,
    })
}

/// The object types a HubSpot sync writes.
pub const HUBSPOT_OBJECTS: [&str; 4] = ["contacts", "companies", "deals", "leads"];

/// Names of the HubSpot record id when used as the match property.
const RECORD_ID_PROPERTIES: [&str; 2] = ["hs_object_id", "id"];

/// Reads `task = { subject, body, due, priority, type, key_property }`.
/// `props` is (model column or property name, CRM property) for every placeholder a template may use.
fn read_task(
    r: &mut Reader<'_>,
    v: toml_span::Value<'_>,
    props: &[(&str, &str)],
    object: &str,
) -> Option<TaskConfig> {
    let span = v.span;
    let mut t = r.table(v, "`task`")?;
    let mut ok = true;
    let association_type_id = match object {
        "contacts" => 204,
        "companies" => 192,
        "deals" => 216,
        other => {
            // An unknown object is reported once, at `object`.
            if HUBSPOT_OBJECTS.contains(&other) {
                r.error(
                    span,
                    format!("tasks can be attached to contacts, companies or deals, not {other:?}"),
                );
            }
            ok = false;
            0
        }
    };
    let template = |r: &mut Reader<'_>, key: &'static str, v: toml_span::Value<'_>| {
        let tspan = v.span;
        let text = r.string(v, key)?;
        match parse_template(&text.value, props) {
            Ok(t) => Some(t),
            Err(msg) => {
                r.error(tspan, format!("`{key}`: {msg}"));
                None
            }
        }
    };
    let subject = match t.take("subject") {
        Some(v) => template(r, "task.subject", v),
        None => {
            r.error(
                span,
                "`task` needs `subject`, e.g. subject = \"Call {firstname} {lastname}\"",
            );
            None
        }
    };
    let body = match t.take("body") {
        Some(v) => {
            let b = template(r, "task.body", v);
            if b.is_none() {
                ok = false;
            }
            b
        }
        None => None,
    };
    let mut due_after_secs = 86_400;
    if let Some(v) = t.take("due") {
        let dspan = v.span;
        if let Some(d) = r.string(v, "task.due") {
            match parse_duration(&d.value) {
                Some(s) => due_after_secs = s,
                None => {
                    r.error(dspan, format!("`task.due` must be a duration such as \"30m\", \"4h\" or \"2d\", found {:?}", d.value));
                    ok = false;
                }
            }
        }
    }
    let mut choice = |r: &mut Reader<'_>, key: &'static str, allowed: &[&str], default: &str| {
        match t.take(key) {
            Some(v) => {
                let cspan = v.span;
                let s = r.string(v, &format!("task.{key}"))?;
                let upper = s.value.to_ascii_uppercase();
                if allowed.contains(&upper.as_str()) {
                    Some(upper)
                } else {
                    r.error(
                        cspan,
                        format!(
                            "`task.{key}` must be one of {}, found {:?}",
                            allowed.join(", "),
                            s.value
                        ),
                    );
                    None
                }
            }
            None => Some(default.to_string()),
        }
    };
    let priority = choice(r, "priority", &["HIGH", "MEDIUM", "LOW"], "HIGH");
    let task_type = choice(r, "type", &["CALL", "EMAIL", "TODO"], "CALL");
    let key_property = match t.take("key_property") {
        Some(v) => r.string(v, "task.key_property").map(|s| s.value),
        None => Some(DEFAULT_TASK_KEY_PROPERTY.to_string()),
    };
    r.finish(t);
    if !ok {
        return None;
    }
    Some(TaskConfig {
        subject: subject?,
        body,
        due_after_secs,
        priority: priority?,
        task_type: task_type?,
        key_property: key_property?,
        association_type_id,
    })
}

/// The task property handoff stores its idempotency key in, unless the sync names another.
pub const DEFAULT_TASK_KEY_PROPERTY: &str = "handoff_task_key";

/// Splits `"Call {{first_name}}"` into text and placeholders; a placeholder names a
/// mapped model column or a CRM property the sync sends. Single braces are plain text.
fn parse_template(text: &str, props: &[(&str, &str)]) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(TemplatePart::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("unclosed placeholder {{{{{after}"));
        };
        let name = after[..end].trim();
        let Some((_, prop)) = props.iter().find(|(c, p)| *c == name || *p == name) else {
            let known: Vec<&str> = props.iter().map(|(c, _)| *c).collect();
            return Err(format!(
                "{{{{{name}}}}} is neither a mapped column nor a property this sync sends (known: {})",
                known.join(", ")
            ));
        };
        parts.push(TemplatePart::Property(prop.to_string()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_string()));
    }
    Ok(Template { parts })
}

/// `"90s"`, `"30m"`, `"4h"`, `"2d"` or `"0"` → seconds.
fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    let mult = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
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
