//! Checks JSON bodies against HubSpot's published OpenAPI specs, for contract tests.
//!
//! A hand-written validator for the subset of JSON Schema those files use (`$ref`,
//! `type`, `properties`, `required`, `items`, `additionalProperties`, `enum`,
//! `allOf`/`oneOf`/`anyOf`, `nullable`); annotations such as `format`, `example` and
//! `description` are ignored, which also takes care of the files' stray
//! `"example": null`. Any other keyword is reported rather than skipped, so a
//! schema the validator does not understand cannot pass by accident.
//! Objects accept properties the schema does not name unless it says
//! `additionalProperties: false`, as JSON Schema does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Where the specs live: `../shared/api/hubspot` next to the crate.
pub(crate) fn hubspot_spec_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/api/hubspot"
    ))
}

/// Keywords that only describe a schema and never constrain a value.
const ANNOTATIONS: &[&str] = &[
    "description",
    "example",
    "examples",
    "format",
    "title",
    "default",
    "readOnly",
    "writeOnly",
    "deprecated",
    "externalDocs",
    "xml",
];

/// Keywords [`Spec::validate`] enforces.
const ASSERTIONS: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "allOf",
    "oneOf",
    "anyOf",
    "nullable",
];

/// One OpenAPI document.
#[derive(Debug)]
pub(crate) struct Spec {
    name: String,
    doc: Value,
}

/// Where a response's body schema was found.
#[derive(Debug)]
pub(crate) enum ResponseBody<'a> {
    /// The operation declares no content for this status (e.g. a 204): the body must be empty.
    Empty,
    Schema(&'a Value),
}

impl Spec {
    /// Reads `dir/file`; panics with the reason when it is missing or not JSON.
    pub(crate) fn load(dir: &Path, file: &str) -> Spec {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let doc = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        Spec {
            name: file.to_owned(),
            doc,
        }
    }

    fn from_value(name: &str, doc: Value) -> Spec {
        Spec {
            name: name.to_owned(),
            doc,
        }
    }

    fn operation(&self, method: &str, path: &str) -> Result<&Value, String> {
        self.doc
            .get("paths")
            .and_then(|paths| paths.get(path))
            .and_then(|item| item.get(method.to_ascii_lowercase()))
            .ok_or_else(|| format!("{}: no operation {method} {path}", self.name))
    }

    /// Follows a local `$ref` (`#/components/...`).
    fn resolve<'a>(&'a self, reference: &str) -> Result<&'a Value, String> {
        reference
            .strip_prefix('#')
            .and_then(|pointer| self.doc.pointer(pointer))
            .ok_or_else(|| format!("{}: unresolvable $ref {reference}", self.name))
    }

    /// The JSON schema a media-type map holds. HubSpot declares its shared error
    /// response under `*/*` rather than `application/json`, so that is accepted too.
    fn json_schema<'a>(&'a self, content: &'a Value, what: &str) -> Result<&'a Value, String> {
        content
            .get("application/json")
            .or_else(|| content.get("*/*"))
            .and_then(|media| media.get("schema"))
            .ok_or_else(|| format!("{}: {what} has no JSON schema", self.name))
    }

    /// The schema of `method path`'s JSON request body.
    pub(crate) fn request_schema(&self, method: &str, path: &str) -> Result<&Value, String> {
        let content = self
            .operation(method, path)?
            .get("requestBody")
            .and_then(|body| body.get("content"))
            .ok_or_else(|| format!("{}: {method} {path} takes no request body", self.name))?;
        self.json_schema(content, &format!("{method} {path} request"))
    }

    /// The body `method path` declares for `status`. A success status must be
    /// declared itself; an error status may fall back to `default`.
    pub(crate) fn response_body(
        &self,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<ResponseBody<'_>, String> {
        let responses = self
            .operation(method, path)?
            .get("responses")
            .ok_or_else(|| format!("{}: {method} {path} has no responses", self.name))?;
        let declared = responses.get(status.to_string());
        let mut response = match declared {
            Some(response) => response,
            None if !(200..300).contains(&status) => responses.get("default").ok_or_else(|| {
                format!(
                    "{}: {method} {path} declares neither {status} nor default",
                    self.name
                )
            })?,
            None => {
                return Err(format!(
                    "{}: {method} {path} does not declare a {status} response",
                    self.name
                ));
            }
        };
        // A response may be a reference to `components/responses`, with a sibling description.
        if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
            response = self.resolve(reference)?;
        }
        match response.get("content") {
            Some(content) if content.as_object().is_some_and(|c| !c.is_empty()) => Ok(
                ResponseBody::Schema(
                    self.json_schema(content, &format!("{method} {path} {status}"))?,
                ),
            ),
            _ => Ok(ResponseBody::Empty),
        }
    }

    /// Validates a request body; `Err` lists every violation.
    pub(crate) fn check_request(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<(), String> {
        let schema = self.request_schema(method, path)?;
        self.report(&format!("request {method} {path}"), schema, body)
    }

    /// Validates a response; `body` is `None` when the response had no body.
    pub(crate) fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: Option<&Value>,
    ) -> Result<(), String> {
        match (self.response_body(method, path, status)?, body) {
            (ResponseBody::Empty, None) => Ok(()),
            (ResponseBody::Empty, Some(body)) => Err(format!(
                "response {method} {path} {status}: the spec declares no body, got {body}"
            )),
            (ResponseBody::Schema(_), None) => Err(format!(
                "response {method} {path} {status}: the spec declares a body, got none"
            )),
            (ResponseBody::Schema(schema), Some(body)) => {
                self.report(&format!("response {method} {path} {status}"), schema, body)
            }
        }
    }

    fn report(&self, what: &str, schema: &Value, value: &Value) -> Result<(), String> {
        let errors = self.validate(schema, value);
        if errors.is_empty() {
            return Ok(());
        }
        let mut message = format!("{what} does not match {}:", self.name);
        for error in &errors {
            let _ = write!(message, "\n  {error}");
        }
        let _ = write!(message, "\nbody: {value}");
        Err(message)
    }

    /// Every way `value` breaks `schema`, each as `"$.path: problem"`.
    pub(crate) fn validate(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, "$", &mut errors);
        errors
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(schema) = schema.as_object() else {
            // `true` accepts anything, `false` nothing; nothing else is a schema.
            match schema {
                Value::Bool(true) => {}
                Value::Bool(false) => errors.push(format!("{at}: no value is allowed here")),
                other => errors.push(format!("{at}: not a schema: {other}")),
            }
            return;
        };
        if let Some(reference) = schema.get("$ref") {
            // In OpenAPI 3.0 a `$ref`'s siblings are ignored.
            match reference.as_str().map(|r| self.resolve(r)) {
                Some(Ok(target)) => self.check(target, value, at, errors),
                Some(Err(error)) => errors.push(format!("{at}: {error}")),
                None => errors.push(format!("{at}: $ref is not a string")),
            }
            return;
        }
        for keyword in schema.keys() {
            if !ASSERTIONS.contains(&keyword.as_str())
                && !ANNOTATIONS.contains(&keyword.as_str())
                && !keyword.starts_with("x-")
            {
                errors.push(format!("{at}: unsupported schema keyword {keyword:?}"));
            }
        }
        if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
            return;
        }
        if let Some(expected) = schema.get("type").and_then(Value::as_str)
            && !has_type(value, expected)
        {
            errors.push(format!(
                "{at}: expected {expected}, got {}",
                describe(value)
            ));
            // The keywords below assume the type; checking them too would only add noise.
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            errors.push(format!(
                "{at}: {value} is not one of {}",
                Value::from(allowed.clone())
            ));
        }
        if let Some(object) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(name) {
                    errors.push(format!("{at}: missing required property {name:?}"));
                }
            }
            for (name, item) in object {
                let path = format!("{at}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => self.check(property, item, &path, errors),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errors.push(format!("{path}: property not allowed"));
                        }
                        Some(extra) => self.check(extra, item, &path, errors),
                        None => {}
                    },
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"), errors);
            }
        }
        let branches = |name: &str| {
            schema.get(name).and_then(Value::as_array).map(|all| {
                all.iter()
                    .map(|branch| self.validate_at(branch, value, at))
                    .collect::<Vec<_>>()
            })
        };
        if let Some(results) = branches("allOf") {
            errors.extend(results.into_iter().flatten());
        }
        if let Some(results) = branches("anyOf")
            && !results.iter().any(Vec::is_empty)
        {
            errors.push(format!(
                "{at}: matches none of anyOf: {}",
                results.concat().join("; ")
            ));
        }
        if let Some(results) = branches("oneOf") {
            let matching = results.iter().filter(|r| r.is_empty()).count();
            if matching != 1 {
                errors.push(format!(
                    "{at}: matches {matching} of oneOf's branches, not exactly one"
                ));
            }
        }
    }

    fn validate_at(&self, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, at, &mut errors);
        errors
    }

    /// Every keyword in the document's schemas that the validator would not understand.
    pub(crate) fn unsupported_keywords(&self) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(schemas) = self
            .doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
        {
            for (name, schema) in schemas {
                collect_unsupported(schema, &format!("{}#{name}", self.name), &mut found);
            }
        }
        found
    }
}

fn collect_unsupported(schema: &Value, at: &str, found: &mut Vec<String>) {
    let Some(object) = schema.as_object() else {
        return;
    };
    if object.contains_key("$ref") {
        return;
    }
    for (keyword, sub) in object {
        let known = ASSERTIONS.contains(&keyword.as_str())
            || ANNOTATIONS.contains(&keyword.as_str())
            || keyword.starts_with("x-");
        if !known {
            found.push(format!("{at}: {keyword}"));
            continue;
        }
        match keyword.as_str() {
            "properties" => {
                for (name, property) in sub.as_object().into_iter().flatten() {
                    collect_unsupported(property, &format!("{at}.{name}"), found);
                }
            }
            "items" | "additionalProperties" => {
                collect_unsupported(sub, &format!("{at}/{keyword}"), found);
            }
            "allOf" | "oneOf" | "anyOf" => {
                for (i, branch) in sub.as_array().into_iter().flatten().enumerate() {
                    collect_unsupported(branch, &format!("{at}/{keyword}[{i}]"), found);
                }
            }
            _ => {}
        }
    }
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let mut text = value.to_string();
    if text.len() > 60 {
        let cut = (0..=60)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    format!("{kind} {text}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> Spec {
        Spec::from_value(
            "test.json",
            json!({
                "paths": {
                    "/things": {"post": {
                        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}, "example": null}}},
                        "responses": {
                            "201": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                            "204": {"description": "No content", "content": {}},
                            "default": {"description": "", "$ref": "#/components/responses/Error"}
                        }
                    }}
                },
                "components": {
                    "schemas": {
                        "Thing": {
                            "type": "object", "example": null,
                            "required": ["id", "tags"],
                            "properties": {
                                "id": {"type": "string", "example": null},
                                "count": {"type": "integer", "format": "int32"},
                                "kind": {"type": "string", "enum": ["A", "B"]},
                                "tags": {"type": "array", "items": {"type": "string"}},
                                "props": {"type": "object", "additionalProperties": {"type": "string"}},
                                "strict": {"type": "object", "properties": {"a": {"type": "boolean"}}, "additionalProperties": false},
                                "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]}
                            }
                        },
                        "Error": {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}
                    },
                    "responses": {
                        "Error": {"content": {"*/*": {"schema": {"$ref": "#/components/schemas/Error"}, "example": null}}}
                    }
                }
            }),
        )
    }

    #[test]
    fn accepts_a_conforming_body_with_extra_properties() {
        let spec = spec();
        let body = json!({"id": "1", "count": 3, "kind": "A", "tags": ["x"], "props": {"a": "b"}, "either": 5, "extra": true});
        assert_eq!(spec.check_request("POST", "/things", &body), Ok(()));
        assert_eq!(
            spec.check_response("POST", "/things", 201, Some(&body)),
            Ok(())
        );
        assert_eq!(spec.check_response("POST", "/things", 204, None), Ok(()));
        // The default error response is declared under */* only.
        assert_eq!(
            spec.check_response(
                "POST",
                "/things",
                400,
                Some(&json!({"message": "m", "status": "error"}))
            ),
            Ok(())
        );
    }

    #[test]
    fn reports_each_violation_with_its_path() {
        let spec = spec();
        let errors = spec.validate(
            &json!({"$ref": "#/components/schemas/Thing"}),
            &json!({"id": 1, "count": 1.5, "kind": "C", "tags": ["x", 2], "props": {"a": 1},
                    "strict": {"b": true}, "either": true}),
        );
        let expected = [
            "$.count: expected integer",
            "$.either: matches 0 of oneOf",
            "$.id: expected string",
            "$.kind: \"C\" is not one of",
            "$.props.a: expected string",
            "$.strict.b: property not allowed",
            "$.tags[1]: expected string",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.starts_with(expected), "{error} vs {expected}");
        }
        let missing = spec.validate(&json!({"$ref": "#/components/schemas/Thing"}), &json!({}));
        assert_eq!(
            missing,
            [
                "$: missing required property \"id\"",
                "$: missing required property \"tags\""
            ]
        );
    }

    #[test]
    fn checks_declared_statuses_and_bodies() {
        let spec = spec();
        let thing = json!({"id": "1", "tags": []});
        assert!(
            spec.check_response("POST", "/things", 200, Some(&thing))
                .is_err(),
            "200 is not declared"
        );
        assert!(
            spec.check_response("POST", "/things", 204, Some(&thing))
                .is_err()
        );
        assert!(spec.check_response("POST", "/things", 201, None).is_err());
        assert!(spec.check_response("GET", "/things", 200, None).is_err());
        assert!(
            spec.check_response("POST", "/things", 404, Some(&json!({})))
                .is_err()
        );
    }

    #[test]
    fn unknown_keywords_are_reported_not_skipped() {
        let spec = spec();
        let errors = spec.validate(&json!({"type": "string", "pattern": "^a"}), &json!("b"));
        assert_eq!(errors, ["$: unsupported schema keyword \"pattern\""]);
        assert!(spec.unsupported_keywords().is_empty());
    }
}
