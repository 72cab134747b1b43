//! A deterministic sample warehouse: marketing leads, reps and accounts, written as Parquet.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Territories, one rep (HubSpot owner) each.
pub const TERRITORIES: [&str; 8] = [
    "NA-East",
    "NA-West",
    "NA-Central",
    "LATAM",
    "EMEA-North",
    "EMEA-South",
    "APAC",
    "ANZ",
];
/// Owner ids of the sandbox's demo owners, in territory order.
pub const OWNER_IDS: [&str; 8] = ["101", "102", "103", "104", "105", "106", "107", "108"];

const FIRST: [&str; 16] = [
    "Ada", "Grace", "Linus", "Zoë", "Björn", "Chidi", "Mei", "Arjun", "Sofia", "Mateo", "Aiko",
    "Olu", "Nadia", "Tomás", "Ingrid", "Kwame",
];
const LAST: [&str; 16] = [
    "Lovelace", "Hopper", "Okafor", "Tanaka", "Müller", "García", "Singh", "Kowalski", "Haddad",
    "Novak", "Silva", "Kim", "Dubois", "O'Brien", "Jensen", "Mensah",
];
const SOURCES: [&str; 5] = ["webinar", "demo_request", "ebook", "pricing_page", "trial"];
const COUNTRIES: [&str; 8] = ["US", "CA", "BR", "DE", "FR", "JP", "AU", "GB"];

/// Rows written per Parquet row group / Arrow batch.
const CHUNK: usize = 8192;

/// How to generate; `changes` alters a deterministic share of rows for a second run.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub leads: usize,
    pub seed: u64,
    /// The instant the data is relative to (recent activity is just before it).
    pub now: DateTime<Utc>,
    /// Share of leads (0..1) to alter, and the seed choosing how.
    pub changes: Option<(f64, u64)>,
}

pub fn leads_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("lead_id", DataType::Int64, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("first_name", DataType::Utf8, true),
        Field::new("last_name", DataType::Utf8, true),
        Field::new("company", DataType::Utf8, true),
        Field::new("territory", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, true),
        Field::new("lead_score", DataType::Int32, false),
        Field::new("owner_id", DataType::Int64, true),
        Field::new("nurture_status", DataType::Utf8, true),
        Field::new(
            "last_event_time",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("employees", DataType::Int32, true),
    ]))
}

fn writer(path: &Path, schema: Arc<Schema>) -> std::io::Result<ArrowWriter<File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = File::create(path)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("level 1 is valid"),
        ))
        .set_max_row_group_row_count(Some(CHUNK * 16))
        .build();
    ArrowWriter::try_new(file, schema, Some(props)).map_err(std::io::Error::other)
}

/// One lead, a pure function of (seed, id, now): regenerating gives the same row.
struct Lead {
    email: String,
    first: &'static str,
    last: &'static str,
    company: String,
    territory: usize,
    country: &'static str,
    source: &'static str,
    score: i32,
    owner: Option<i64>,
    last_event_us: i64,
    created_us: i64,
    employees: i32,
}

fn lead(spec: &Spec, id: u64) -> Lead {
    let mut rng = StdRng::seed_from_u64(spec.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let now_us = spec.now.timestamp_micros();
    let first = FIRST[rng.random_range(0..FIRST.len())];
    let last = LAST[rng.random_range(0..LAST.len())];
    let company_n = rng.random_range(0..2000u32);
    let territory = rng.random_range(0..TERRITORIES.len());
    let mut score = rng.random_range(0..=100);
    let owner = if rng.random_bool(0.3) {
        Some(101 + rng.random_range(0..8))
    } else {
        None
    };
    // 12 % were active in the last 50 minutes, the rest over the past 30 days.
    let last_event_us = if rng.random_bool(0.12) {
        now_us - rng.random_range(60_000_000..3_000_000_000i64)
    } else {
        now_us - rng.random_range(3_600_000_000..30 * 86_400_000_000i64)
    };
    let created_us = last_event_us - rng.random_range(0..90 * 86_400_000_000i64);
    let mut last_name = last;
    if let Some((share, seed)) = spec.changes {
        let mut c = StdRng::seed_from_u64(seed ^ id.wrapping_mul(0xD1B5_4A32_D192_ED03));
        if c.random_bool(share.clamp(0.0, 1.0)) {
            // Half the changes move the score (leads enter or leave the model), half edit a name.
            if c.random_bool(0.5) {
                score = c.random_range(0..=100);
            } else {
                last_name =
                    LAST[(LAST.iter().position(|l| *l == last).unwrap_or(0) + 1) % LAST.len()];
            }
        }
    }
    let email = format!(
        "{}.{}{}@company{}.example",
        ascii_lower(first),
        ascii_lower(last),
        id,
        company_n
    );
    Lead {
        email,
        first,
        last: last_name,
        company: format!("Company {company_n}"),
        territory,
        country: COUNTRIES[territory % COUNTRIES.len()],
        source: SOURCES[rng.random_range(0..SOURCES.len())],
        score,
        owner,
        last_event_us,
        created_us,
        employees: rng.random_range(5..5000),
    }
}

fn ascii_lower(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Writes `marketing_leads.parquet` in chunks (memory stays flat at any size).
pub fn write_leads(path: &Path, spec: &Spec) -> std::io::Result<()> {
    let schema = leads_schema();
    let mut w = writer(path, Arc::clone(&schema))?;
    let mut id = 1u64;
    while (id as usize) <= spec.leads {
        let n = CHUNK.min(spec.leads + 1 - id as usize);
        let mut lead_id = Int64Builder::with_capacity(n);
        let mut email = StringBuilder::new();
        let mut first = StringBuilder::new();
        let mut last = StringBuilder::new();
        let mut company = StringBuilder::new();
        let mut territory = StringBuilder::new();
        let mut country = StringBuilder::new();
        let mut source = StringBuilder::new();
        let mut score = Int32Builder::with_capacity(n);
        let mut owner = Int64Builder::with_capacity(n);
        let mut nurture = StringBuilder::new();
        let mut last_event = TimestampMicrosecondBuilder::with_capacity(n);
        let mut created = TimestampMicrosecondBuilder::with_capacity(n);
        let mut employees = Int32Builder::with_capacity(n);
        for _ in 0..n {
            let l = lead(spec, id);
            lead_id.append_value(id as i64);
            email.append_value(&l.email);
            first.append_value(l.first);
            last.append_value(l.last);
            company.append_value(&l.company);
            territory.append_value(TERRITORIES[l.territory]);
            country.append_value(l.country);
            source.append_value(l.source);
            score.append_value(l.score);
            owner.append_option(l.owner);
            nurture.append_value("nurturing");
            last_event.append_value(l.last_event_us);
            created.append_value(l.created_us);
            employees.append_value(l.employees);
            id += 1;
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(lead_id.finish()),
            Arc::new(email.finish()),
            Arc::new(first.finish()),
            Arc::new(last.finish()),
            Arc::new(company.finish()),
            Arc::new(territory.finish()),
            Arc::new(country.finish()),
            Arc::new(source.finish()),
            Arc::new(score.finish()),
            Arc::new(owner.finish()),
            Arc::new(nurture.finish()),
            Arc::new(last_event.finish()),
            Arc::new(created.finish()),
            Arc::new(employees.finish()),
        ];
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), columns).map_err(std::io::Error::other)?;
        w.write(&batch).map_err(std::io::Error::other)?;
    }
    w.close().map_err(std::io::Error::other)?;
    Ok(())
}

/// Writes `reps.parquet`: one rep per territory, with the HubSpot owner id the sandbox knows.
pub fn write_reps(path: &Path) -> std::io::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("rep_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, false),
        Field::new("territory", DataType::Utf8, false),
        Field::new("hubspot_owner_id", DataType::Utf8, false),
    ]));
    let mut ids = Int64Builder::new();
    let mut names = StringBuilder::new();
    let mut emails = StringBuilder::new();
    let mut terr = StringBuilder::new();
    let mut owners = StringBuilder::new();
    for (i, t) in TERRITORIES.iter().enumerate() {
        ids.append_value(i as i64 + 1);
        names.append_value(format!("Rep {}", i + 1));
        emails.append_value(format!("rep{}@demo.handoff.dev", i + 1));
        terr.append_value(t);
        owners.append_value(OWNER_IDS[i]);
    }
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(ids.finish()),
            Arc::new(names.finish()),
            Arc::new(emails.finish()),
            Arc::new(terr.finish()),
            Arc::new(owners.finish()),
        ],
    )
    .map_err(std::io::Error::other)?;
    let mut w = writer(path, schema)?;
    w.write(&batch).map_err(std::io::Error::other)?;
    w.close().map_err(std::io::Error::other)?;
    Ok(())
}

/// Writes `accounts.parquet`: the companies leads work at.
pub fn write_accounts(path: &Path, seed: u64) -> std::io::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("account_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("domain", DataType::Utf8, false),
        Field::new("industry", DataType::Utf8, false),
        Field::new("territory", DataType::Utf8, false),
        Field::new("employees", DataType::Int32, false),
    ]));
    const INDUSTRIES: [&str; 6] = [
        "software",
        "fintech",
        "retail",
        "health",
        "manufacturing",
        "media",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ids = Int64Builder::new();
    let mut names = StringBuilder::new();
    let mut domains = StringBuilder::new();
    let mut inds = StringBuilder::new();
    let mut terr = StringBuilder::new();
    let mut emps = Int32Builder::new();
    for n in 0..2000 {
        ids.append_value(n as i64);
        names.append_value(format!("Company {n}"));
        domains.append_value(format!("company{n}.example"));
        inds.append_value(INDUSTRIES[rng.random_range(0..INDUSTRIES.len())]);
        terr.append_value(TERRITORIES[rng.random_range(0..TERRITORIES.len())]);
        emps.append_value(rng.random_range(5..50_000));
    }
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(ids.finish()),
            Arc::new(names.finish()),
            Arc::new(domains.finish()),
            Arc::new(inds.finish()),
            Arc::new(terr.finish()),
            Arc::new(emps.finish()),
        ],
    )
    .map_err(std::io::Error::other)?;
    let mut w = writer(path, schema)?;
    w.write(&batch).map_err(std::io::Error::other)?;
    w.close().map_err(std::io::Error::other)?;
    Ok(())
}
