//! `POST /services/oauth2/token` (client credentials and JWT bearer grants) and the
//! sessions it issues.
//!
//! Which bearer tokens the REST API accepts:
//! - a token this sandbox issued (it starts with the org id and `!`, like Salesforce's):
//!   only while it is unexpired and known (a reset or a restart forgets them);
//! - any other non-empty token, unless the sandbox was started with a token, which is
//!   then the only other one accepted (the same rule as the HubSpot API).
//!
//! JWT assertions are checked for shape (three base64url parts, JSON header and claims
//! with `iss`, `sub`, `aud` and a future `exp`) but their signatures are not verified.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::super::Shared;
use super::errors::OAuthError;
use super::schema::SObject;
use super::{SalesforceState as SfState, ids};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A session the token endpoint issued.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    /// The user the session runs as.
    pub user: String,
    /// On the Salesforce clock ([`SfState::now`]).
    pub expires: Instant,
}

const UNSUPPORTED: OAuthError =
    OAuthError::new("unsupported_grant_type", "grant type not supported");
const INVALID_CLIENT_ID: OAuthError =
    OAuthError::new("invalid_client_id", "client identifier invalid");
const INVALID_CLIENT: OAuthError = OAuthError::new("invalid_client", "invalid client credentials");
const INVALID_ASSERTION: OAuthError = OAuthError::new("invalid_grant", "invalid assertion");
const INVALID_AUDIENCE: OAuthError = OAuthError::new("invalid_grant", "audience is invalid");
const INACTIVE_USER: OAuthError = OAuthError::new("invalid_grant", "inactive user");

/// `POST /services/oauth2/token`, form-encoded (parameters in the query string work too).
pub(super) async fn token(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut params: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if let Some(query) = query {
        for (key, value) in form_urlencoded::parse(query.as_bytes()).into_owned() {
            params.entry(key).or_insert(value);
        }
    }
    let instance_url = instance_url(&headers);
    let mut data = state.lock();
    let sf = &mut data.salesforce;
    let user = match params.get("grant_type").map(String::as_str) {
        Some("client_credentials") => client_credentials(sf, &params, &headers),
        Some(JWT_BEARER) => jwt_bearer(sf, &params, &instance_url),
        _ => Err(UNSUPPORTED),
    };
    match user {
        Ok(user) => axum::Json(sf.issue(user, &instance_url)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `http://host:port` of the request: the instance URL clients send their calls to.
pub(crate) fn instance_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn client_credentials(
    sf: &SfState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<String, OAuthError> {
    let (id, secret) = match basic_credentials(headers) {
        Some(pair) => pair,
        None => (
            params.get("client_id").cloned().unwrap_or_default(),
            params.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if id.is_empty()
        || sf
            .config
            .client_id
            .as_ref()
            .is_some_and(|expected| *expected != id)
    {
        return Err(INVALID_CLIENT_ID);
    }
    if secret.is_empty()
        || sf
            .config
            .client_secret
            .as_ref()
            .is_some_and(|expected| *expected != secret)
    {
        return Err(INVALID_CLIENT);
    }
    // The connected app's "run as" user.
    Ok(sf.api_user.clone())
}

/// `Authorization: Basic base64(id:secret)`, which Salesforce also takes.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn jwt_bearer(
    sf: &SfState,
    params: &HashMap<String, String>,
    instance_url: &str,
) -> Result<String, OAuthError> {
    let assertion = params.get("assertion").ok_or(INVALID_ASSERTION)?;
    let claims = decode_jwt(assertion).ok_or(INVALID_ASSERTION)?;
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(iss), Some(sub)) = (text("iss"), text("sub")) else {
        return Err(INVALID_ASSERTION);
    };
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => return Err(INVALID_ASSERTION),
    };
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(INVALID_ASSERTION)?;
    if exp <= sf.now().1.timestamp() as f64 {
        return Err(INVALID_ASSERTION);
    }
    if sf
        .config
        .client_id
        .as_ref()
        .is_some_and(|expected| expected != iss)
    {
        return Err(INVALID_CLIENT_ID);
    }
    if !audiences
        .iter()
        .any(|aud| valid_audience(aud, instance_url))
    {
        return Err(INVALID_AUDIENCE);
    }
    // The session runs as the user named by `sub` when the org has one by that username.
    let user = sf.org.records(SObject::User).find(|u| {
        u.get("Username")
            .as_str()
            .is_some_and(|name| name.eq_ignore_ascii_case(sub))
    });
    match user {
        Some(user) if user.get("IsActive") == &Value::Bool(false) => Err(INACTIVE_USER),
        Some(user) => Ok(user.id.clone()),
        None => Ok(sf.api_user.clone()),
    }
}

/// Salesforce's login hosts, a My Domain, or the sandbox itself.
fn valid_audience(aud: &str, instance_url: &str) -> bool {
    let aud = aud.trim_end_matches('/');
    aud == "https://login.salesforce.com"
        || aud == "https://test.salesforce.com"
        || (aud.starts_with("https://") && aud.ends_with(".my.salesforce.com"))
        || aud == instance_url
}

/// The claims of a JWT that has three base64url parts and JSON objects for header and claims.
fn decode_jwt(assertion: &str) -> Option<serde_json::Map<String, Value>> {
    let parts: Vec<&str> = assertion.trim().split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return None;
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok();
    if signature.is_empty() || decode(signature).is_none() {
        return None;
    }
    let header: Value = serde_json::from_slice(&decode(header)?).ok()?;
    header.get("alg")?.as_str()?;
    match serde_json::from_slice(&decode(claims)?).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

impl SfState {
    /// Issues a session for `user`, valid for the configured lifetime.
    fn issue(&mut self, user: String, instance_url: &str) -> Value {
        let (now, wall) = self.now();
        self.tokens.retain(|_, issued| issued.expires > now);
        let mut rng = rand::rng();
        const TOKEN_CHARS: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
        let secret: String = (0..96)
            .map(|_| TOKEN_CHARS[rng.random_range(0..TOKEN_CHARS.len())] as char)
            .collect();
        let access_token = format!("{}!AQ{secret}", ids::short(&self.org_id));
        let signature: [u8; 32] = rng.random();
        self.tokens.insert(
            access_token.clone(),
            Issued {
                user: user.clone(),
                expires: now + Duration::from_secs(self.config.token_lifetime_secs),
            },
        );
        json!({
            "access_token": access_token,
            // Random, not an HMAC of `id` and `issued_at` with the client secret.
            "signature": STANDARD.encode(signature),
            "scope": "api",
            "instance_url": instance_url,
            "id": format!("{instance_url}/id/{}/{user}", self.org_id),
            "token_type": "Bearer",
            "issued_at": wall.timestamp_millis().to_string(),
        })
    }

    /// The user a bearer token's requests run as, or `None` when it is refused
    /// (see the module docs). `configured` is the sandbox's startup token.
    pub(crate) fn session_user(&mut self, token: &str, configured: Option<&str>) -> Option<String> {
        let ours = token
            .strip_prefix(ids::short(&self.org_id))
            .is_some_and(|rest| rest.starts_with('!'));
        if ours {
            let now = self.now().0;
            let issued = self.tokens.get(token)?;
            if issued.expires <= now {
                self.tokens.remove(token);
                return None;
            }
            return Some(issued.user.clone());
        }
        configured
            .is_none_or(|expected| expected == token)
            .then(|| self.api_user.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &Value) -> String {
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.{}",
            part(&json!({"alg": "RS256"})),
            part(claims),
            URL_SAFE_NO_PAD.encode(b"not-a-real-signature")
        )
    }

    #[test]
    fn jwts_need_three_parts_and_json() {
        let claims = json!({"iss": "a", "sub": "b", "aud": "c", "exp": 1});
        assert_eq!(decode_jwt(&jwt(&claims)).map(Value::Object), Some(claims));
        assert_eq!(decode_jwt("a.b"), None);
        assert_eq!(decode_jwt("a.b.c.d"), None);
        assert_eq!(decode_jwt("!!.??.sig"), None);
        let not_json = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode("{}"),
            URL_SAFE_NO_PAD.encode("x")
        );
        assert_eq!(decode_jwt(&not_json), None);
    }

    #[test]
    fn audiences() {
        assert!(valid_audience("https://login.salesforce.com/", "http://x"));
        assert!(valid_audience("https://acme.my.salesforce.com", "http://x"));
        assert!(valid_audience(
            "http://127.0.0.1:4010",
            "http://127.0.0.1:4010"
        ));
        assert!(!valid_audience("https://evil.example", "http://x"));
    }
}
