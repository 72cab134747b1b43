//! The DataFusion context and its table sources: directories of Parquet, CSV and NDJSON files.

use std::path::{Path, PathBuf};

use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};

use crate::project::{FileFormat, Project, TableConfig};

/// Why the warehouse could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("handoff.toml:{line}: table `{table}`: {message}")]
    Table {
        table: String,
        line: usize,
        message: String,
    },
    #[error("handoff.toml: warehouse.path {path}: {message}")]
    Dir { path: PathBuf, message: String },
}

/// A table found on disk, ready to register.
#[derive(Debug, Clone)]
pub struct TableSource {
    pub name: String,
    pub path: PathBuf,
    pub format: FileFormat,
    /// The file extension DataFusion lists in a directory (with the dot).
    pub extension: String,
    pub csv_has_header: bool,
    pub csv_delimiter: u8,
    /// Line in handoff.toml (0 for tables discovered under `warehouse.path`).
    pub line: usize,
}

/// Rows per Arrow batch: small enough that memory stays bounded by batch size.
pub const BATCH_SIZE: usize = 8192;

/// A session with every warehouse table registered; errors for all tables are returned together.
pub async fn open(project: &Project) -> Result<SessionContext, Vec<WarehouseError>> {
    let config = SessionConfig::new()
        .with_batch_size(BATCH_SIZE)
        .with_information_schema(false)
        .set_bool("datafusion.sql_parser.collect_spans", true);
    let ctx = SessionContext::new_with_config(config);
    let mut errors = Vec::new();
    let mut sources = Vec::new();
    if let Some(dir) = &project.warehouse.dir {
        match discover(dir) {
            Ok(found) => sources.extend(found),
            Err(e) => errors.push(e),
        }
    }
    for t in &project.warehouse.tables {
        match resolve(t) {
            Ok(s) => {
                // An explicit table overrides a discovered one of the same name.
                sources.retain(|d: &TableSource| d.name != s.name);
                sources.push(s);
            }
            Err(e) => errors.push(e),
        }
    }
    for s in &sources {
        if let Err(e) = register(&ctx, s).await {
            errors.push(WarehouseError::Table {
                table: s.name.clone(),
                line: s.line,
                message: format!("{} cannot be read: {e}", s.path.display()),
            });
        }
    }
    if errors.is_empty() {
        Ok(ctx)
    } else {
        Err(errors)
    }
}

async fn register(ctx: &SessionContext, s: &TableSource) -> datafusion::error::Result<()> {
    let path = s.path.to_string_lossy();
    match s.format {
        FileFormat::Parquet => {
            let opts = ParquetReadOptions::default().file_extension(&s.extension);
            ctx.register_parquet(&s.name, path.as_ref(), opts).await
        }
        FileFormat::Csv => {
            let opts = CsvReadOptions::new()
                .has_header(s.csv_has_header)
                .delimiter(s.csv_delimiter)
                .file_extension(&s.extension);
            ctx.register_csv(&s.name, path.as_ref(), opts).await
        }
        FileFormat::Ndjson => {
            let opts = JsonReadOptions::default().file_extension(&s.extension);
            ctx.register_json(&s.name, path.as_ref(), opts).await
        }
    }
}

fn extension_of(p: &Path) -> Option<(FileFormat, String)> {
    let ext = p.extension()?.to_str()?;
    FileFormat::from_extension(ext).map(|f| (f, format!(".{ext}")))
}

/// The format of a directory: that of its data files, which must agree.
fn dir_format(dir: &Path) -> Result<Option<(FileFormat, String)>, String> {
    let mut found: Option<(FileFormat, String)> = None;
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if !p.is_file()
            || p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if let Some((f, ext)) = extension_of(&p) {
            match &found {
                None => found = Some((f, ext)),
                Some((_, prev)) if *prev != ext => {
                    return Err(format!(
                        "mixes {prev} and {ext} files: keep one format per table"
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(found)
}

fn resolve(t: &TableConfig) -> Result<TableSource, WarehouseError> {
    let err = |message: String| WarehouseError::Table {
        table: t.name.clone(),
        line: t.line,
        message,
    };
    let meta = std::fs::metadata(&t.path).map_err(|e| err(format!("{}: {e}", t.path.display())))?;
    let detected = if meta.is_dir() {
        dir_format(&t.path).map_err(|m| err(format!("{}: {m}", t.path.display())))?
    } else {
        extension_of(&t.path)
    };
    let (format, extension) = match (t.format, detected) {
        (Some(f), Some((_, ext))) => (f, ext),
        (Some(f), None) if meta.is_dir() => {
            return Err(err(format!(
                "{} has no {} files",
                t.path.display(),
                f.extension()
            )));
        }
        (Some(f), None) => (f, String::new()),
        (None, Some(d)) => d,
        (None, None) => {
            return Err(err(format!(
                "cannot tell the format of {}: set format = \"parquet\" | \"csv\" | \"ndjson\"",
                t.path.display()
            )));
        }
    };
    Ok(TableSource {
        name: t.name.to_lowercase(),
        path: t.path.clone(),
        format,
        // A single file is registered by its full path; the extension filter must not reject it.
        extension: if meta.is_dir() {
            extension
        } else {
            String::new()
        },
        csv_has_header: t.csv_has_header,
        csv_delimiter: t.csv_delimiter,
        line: t.line,
    })
}

/// Every file `NAME.ext` and directory `NAME/` of data files under `dir` becomes table `NAME`.
pub fn discover(dir: &Path) -> Result<Vec<TableSource>, WarehouseError> {
    let err = |message: String| WarehouseError::Dir {
        path: dir.to_path_buf(),
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let Some(name) = p.file_stem().map(|s| s.to_string_lossy().to_lowercase()) else {
            continue;
        };
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let (format, extension) = if p.is_dir() {
            match dir_format(&p).map_err(|m| err(format!("{}: {m}", p.display())))? {
                Some(d) => d,
                None => continue,
            }
        } else {
            match extension_of(&p) {
                Some((f, _)) => (f, String::new()),
                None => continue,
            }
        };
        if out.iter().any(|s: &TableSource| s.name == name) {
            return Err(err(format!("two sources would both be table `{name}`")));
        }
        out.push(TableSource {
            name,
            path: p,
            format,
            extension,
            csv_has_header: true,
            csv_delimiter: b',',
            line: 0,
        });
    }
    Ok(out)
}
