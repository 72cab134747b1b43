//! Seeds as data: parsing whose errors name the bad entry, the checks a seed must
//! pass, and `POST /_sandbox/seed`, which installs one without a restart.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::ApiError;
use super::hubspot::valid_email;
use super::store::{IdProperty, ObjectType};
use super::{SalesforceSeed, Seed, Shared};

impl Seed {
    /// Parses a seed from JSON: `{"owners": [...], "contacts": [{...}], "companies": [{...}],
    /// "slack_channels": [{"id", "name"}], "properties": {...}, "salesforce": {...}}`, then
    /// checks it ([`Seed::validate`]). An error names the entry at fault (`contacts[3]: ...`).
    /// Without `owners`, `properties` or `salesforce`, the demo's are kept.
    pub fn from_json(text: &[u8]) -> Result<Seed, String> {
        let seed = parse(text, false)?;
        seed.validate(None).map_err(|errors| errors.join("; "))?;
        Ok(seed)
    }

    /// Every rule the seed breaks, each naming its entry: owner ids are numeric and
    /// unique, owner emails unique; contact emails valid and unique; company domains
    /// unique; a `hubspot_owner_id` names a seeded owner; Slack channels have an id and
    /// a name, both unique; the Salesforce org seeds cleanly. With `base`, its entries count
    /// as already taken (adding to it).
    pub fn validate(&self, base: Option<&Seed>) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let empty = Seed::default();
        let base = base.unwrap_or(&empty);

        let mut owner_ids = Taken::default();
        let mut owner_emails = Taken::default();
        for (i, owner) in base.owners.iter().enumerate() {
            owner_ids.hold(owner.id.clone(), format!("owners[{i}] of the current seed"));
            owner_emails.hold(
                owner.email.to_lowercase(),
                format!("owners[{i}] of the current seed"),
            );
        }
        for (i, owner) in self.owners.iter().enumerate() {
            let label = format!("owners[{i}] (id {:?})", owner.id);
            if owner.id.is_empty() || !owner.id.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(format!(
                    "{label}: the id must be a number, as hubspot_owner_id values are"
                ));
            }
            if !valid_email(&owner.email) {
                errors.push(format!("{label}: email {:?} is invalid", owner.email));
            }
            owner_ids.claim(owner.id.clone(), &label, "id", &mut errors);
            owner_emails.claim(owner.email.to_lowercase(), &label, "email", &mut errors);
        }
        let owner_known = |id: &str| {
            base.owners
                .iter()
                .chain(&self.owners)
                .any(|owner| owner.id == id.trim())
        };

        for (list, kind, base_list) in [
            ("contacts", ObjectType::Contacts, &base.contacts),
            ("companies", ObjectType::Companies, &base.companies),
        ] {
            let own = if kind == ObjectType::Contacts {
                &self.contacts
            } else {
                &self.companies
            };
            let mut taken: HashMap<&str, Taken> = HashMap::new();
            for (i, properties) in base_list.iter().enumerate() {
                for property in kind.unique_properties() {
                    if let Some(value) = properties.get(*property).filter(|v| !v.trim().is_empty())
                    {
                        taken.entry(*property).or_default().hold(
                            kind.normalize(property, value).into_owned(),
                            format!("{list}[{i}] of the current seed"),
                        );
                    }
                }
            }
            for (i, properties) in own.iter().enumerate() {
                let label = format!("{list}[{i}]");
                if kind == ObjectType::Contacts
                    && let Some(email) = properties.get("email").filter(|v| !v.trim().is_empty())
                    && !valid_email(email)
                {
                    errors.push(format!("{label}: email {email:?} is invalid"));
                }
                for property in kind.unique_properties() {
                    if let Some(value) = properties.get(*property).filter(|v| !v.trim().is_empty())
                    {
                        taken.entry(*property).or_default().claim(
                            kind.normalize(property, value).into_owned(),
                            &label,
                            property,
                            &mut errors,
                        );
                    }
                }
                if let Some(owner) = properties.get("hubspot_owner_id").filter(|v| !v.is_empty())
                    && !owner_known(owner)
                {
                    errors.push(format!(
                        "{label}: hubspot_owner_id {owner:?} is not a seeded owner"
                    ));
                }
            }
        }

        let mut channel_ids = Taken::default();
        let mut channel_names = Taken::default();
        for (i, channel) in base.slack_channels.iter().enumerate() {
            let label = format!("slack_channels[{i}] of the current seed");
            channel_ids.hold(channel.id.clone(), label.clone());
            channel_names.hold(channel_name(&channel.name).to_owned(), label);
        }
        for (i, channel) in self.slack_channels.iter().enumerate() {
            let label = format!("slack_channels[{i}]");
            let name = channel_name(&channel.name);
            if channel.id.trim().is_empty() || name.trim().is_empty() {
                errors.push(format!("{label}: a channel needs an id and a name"));
                continue;
            }
            channel_ids.claim(channel.id.clone(), &label, "id", &mut errors);
            channel_names.claim(name.to_owned(), &label, "name", &mut errors);
        }

        if let Err(problem) = self.salesforce.check() {
            // Already named: `salesforce.leads[0]: ...`.
            errors.push(problem);
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Appends `more`'s entries. Destructured so a new seed field cannot be forgotten here.
    fn extend(&mut self, more: Seed) {
        let Seed {
            owners,
            contacts,
            companies,
            slack_channels,
            properties,
            // Refused unless empty when adding (see `add`).
            salesforce: _,
        } = more;
        self.owners.extend(owners);
        self.contacts.extend(contacts);
        self.companies.extend(companies);
        self.slack_channels.extend(slack_channels);
        add_properties(&mut self.properties, properties);
    }
}

/// Adds custom property names by object type, each once.
fn add_properties(
    to: &mut std::collections::BTreeMap<String, Vec<String>>,
    more: std::collections::BTreeMap<String, Vec<String>>,
) {
    for (kind, names) in more {
        let known = to.entry(kind).or_default();
        for name in names {
            if !known.contains(&name) {
                known.push(name);
            }
        }
    }
}

fn channel_name(name: &str) -> &str {
    name.strip_prefix('#').unwrap_or(name)
}

/// Values already used, each with the entry that holds it.
#[derive(Default)]
struct Taken(HashMap<String, String>);

impl Taken {
    fn hold(&mut self, value: String, holder: String) {
        self.0.entry(value).or_insert(holder);
    }

    fn claim(&mut self, value: String, label: &str, what: &str, errors: &mut Vec<String>) {
        match self.0.get(&value) {
            Some(holder) => errors.push(format!(
                "{label}: {what} {value:?} is already used by {holder}"
            )),
            None => {
                self.0.insert(value, label.to_owned());
            }
        }
    }
}

/// Parses without checking the rules. With `adding`, a missing `owners`, `properties` or
/// `salesforce` means none (instead of the demo's), since nothing is being replaced.
fn parse(text: &[u8], adding: bool) -> Result<Seed, String> {
    let mut value: Value = serde_json::from_slice(text).map_err(|e| {
        format!(
            "invalid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        )
    })?;
    let Some(object) = value.as_object_mut() else {
        return Err(
            r#"a seed is a JSON object: {"owners": [...], "contacts": [...], "companies": [...], "slack_channels": [...], "properties": {...}, "salesforce": {...}}"#
                .to_owned(),
        );
    };
    if adding {
        object
            .entry("owners")
            .or_insert_with(|| Value::Array(Vec::new()));
        object
            .entry("properties")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        object
            .entry("salesforce")
            .or_insert_with(|| serde_json::json!({"users": []}));
    }
    match serde_json::from_value::<Seed>(value.clone()) {
        Ok(seed) => Ok(seed),
        Err(error) => Err(culprit(&value).unwrap_or_else(|| error.to_string())),
    }
}

/// The first list entry that fails on its own, as `"list[i]: error"`: serde's own
/// message says what is wrong but not where, in a body without line breaks.
fn culprit(value: &Value) -> Option<String> {
    let object = value.as_object()?;
    object.iter().find_map(|(key, list)| {
        list.as_array()?.iter().enumerate().find_map(|(i, entry)| {
            let mut alone = serde_json::Map::new();
            alone.insert(key.clone(), Value::Array(vec![entry.clone()]));
            serde_json::from_value::<Seed>(Value::Object(alone))
                .err()
                .map(|error| format!("{key}[{i}]: {error}"))
        })
    })
}

/// `?mode=replace` (the default) or `?mode=add`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SeedQuery {
    #[serde(default)]
    mode: SeedMode,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SeedMode {
    /// The data goes back to this seed, which later resets return to.
    #[default]
    Replace,
    /// The entries are added to the live data and to the seed resets return to.
    Add,
}

/// What `POST /_sandbox/seed` answers: the seed now in force, counted.
#[derive(Debug, Serialize)]
struct SeedSummary {
    status: &'static str,
    mode: SeedMode,
    owners: usize,
    contacts: usize,
    companies: usize,
    slack_channels: usize,
}

/// `POST /_sandbox/seed[?mode=add]` with a seed as JSON.
pub(super) async fn seed(
    State(state): State<Shared>,
    query: Result<Query<SeedQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Validation(e.body_text()))?;
    let adding = query.mode == SeedMode::Add;
    let seed = parse(&body, adding).map_err(ApiError::Validation)?;
    let installed = if adding {
        add(&state, seed)?
    } else {
        seed.validate(None)
            .map_err(|errors| ApiError::Validation(errors.join("; ")))?;
        state.reseed(seed.clone());
        seed
    };
    Ok(axum::Json(SeedSummary {
        status: "ok",
        mode: query.mode,
        owners: installed.owners.len(),
        contacts: installed.contacts.len(),
        companies: installed.companies.len(),
        slack_channels: installed.slack_channels.len(),
    })
    .into_response())
}

/// Adds `more` to the live data and to the seed; nothing changes unless all of it fits.
fn add(state: &Shared, more: Seed) -> Result<Seed, ApiError> {
    let mut seed = state.seed();
    let mut data = state.lock();
    let mut errors = more.validate(Some(&seed)).err().unwrap_or_default();
    if more.salesforce != SalesforceSeed::default() {
        errors.push(
            "salesforce: a Salesforce org can only be installed by replacing the seed (mode=replace)"
                .to_owned(),
        );
    }
    // The live data may hold records created since the seed was installed.
    for (list, kind, entries) in [
        ("contacts", ObjectType::Contacts, &more.contacts),
        ("companies", ObjectType::Companies, &more.companies),
    ] {
        let table = data.store.table(kind);
        for (i, properties) in entries.iter().enumerate() {
            for property in kind.unique_properties() {
                if let Some(value) = properties.get(*property).filter(|v| !v.trim().is_empty())
                    && let Some(holder) = table.resolve(value, IdProperty::Unique(property))
                {
                    errors.push(format!(
                        "{list}[{i}]: {property} {:?} is already used by record {holder}",
                        kind.normalize(property, value)
                    ));
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors.join("; ")));
    }
    let now = Utc::now();
    for (kind, entries) in [
        (ObjectType::Contacts, &more.contacts),
        (ObjectType::Companies, &more.companies),
    ] {
        let table = data.store.table_mut(kind);
        for properties in entries {
            table.create(properties, now);
        }
    }
    data.owners.extend(more.owners.iter().cloned());
    data.slack.add_channels(&more.slack_channels);
    add_properties(&mut data.properties, more.properties.clone());
    seed.extend(more);
    state.set_seed(seed.clone());
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_entry_is_named() {
        let error = Seed::from_json(
            br#"{"contacts": [{"email": "a@x.io"}, {"email": 5}], "companies": []}"#,
        )
        .expect_err("a number is not a property value");
        assert!(
            error.starts_with("contacts[1]: invalid type: integer `5`"),
            "{error}"
        );

        let error = Seed::from_json(br#"{"owners": [{"id": "1"}]}"#).expect_err("no email");
        assert!(
            error.starts_with("owners[0]: missing field `email`"),
            "{error}"
        );

        let error =
            Seed::from_json(br#"{"contacts": [], "leads": []}"#).expect_err("unknown field");
        assert!(error.contains("unknown field `leads`"), "{error}");

        let error = Seed::from_json(b"{\"contacts\": [").expect_err("truncated");
        assert!(error.starts_with("invalid JSON at line 1"), "{error}");
    }

    #[test]
    fn rules_name_every_bad_entry() {
        let error = Seed::from_json(
            br##"{
              "contacts": [
                {"email": "Ada@x.io"}, {"email": "not-an-email"}, {"email": "ada@x.io "},
                {"email": "b@x.io", "hubspot_owner_id": "999"}
              ],
              "companies": [{"domain": "x.io"}, {"domain": "X.io"}],
              "slack_channels": [{"id": "C1", "name": "#alerts"}, {"id": "C2", "name": "alerts"}]
            }"##,
        )
        .expect_err("four broken rules");
        assert_eq!(
            error,
            [
                r#"contacts[1]: email "not-an-email" is invalid"#,
                r#"contacts[2]: email "ada@x.io" is already used by contacts[0]"#,
                r#"contacts[3]: hubspot_owner_id "999" is not a seeded owner"#,
                r#"companies[1]: domain "x.io" is already used by companies[0]"#,
                r#"slack_channels[1]: name "alerts" is already used by slack_channels[0]"#,
            ]
            .join("; ")
        );
    }

    #[test]
    fn a_good_seed_keeps_the_demo_owners_when_it_names_none() {
        let seed =
            Seed::from_json(br#"{"contacts": [{"email": "a@x.io", "hubspot_owner_id": "101"}]}"#)
                .expect("valid");
        assert_eq!(seed.owners, Seed::demo().owners);
        assert_eq!(seed.contacts.len(), 1);
    }

    #[test]
    fn adding_checks_against_the_base() {
        let base = Seed::from_json(br#"{"contacts": [{"email": "a@x.io"}]}"#).expect("valid");
        let more = parse(br#"{"contacts": [{"email": "A@x.io"}]}"#, true).expect("parses");
        assert!(more.owners.is_empty(), "adding keeps no demo owners");
        assert_eq!(
            more.validate(Some(&base)),
            Err(vec![
                r#"contacts[0]: email "a@x.io" is already used by contacts[0] of the current seed"#
                    .to_owned()
            ])
        );
    }
}
