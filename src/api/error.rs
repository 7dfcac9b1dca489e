//! RFC 9457 problem details for every error the API returns, and the JSON body extractor
//! that turns bad input into precise problems (400 malformed, 413 too large, 415 wrong
//! media type, 422 naming the field).

use axum::body::Bytes;
use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Problem type URIs (relative references, RFC 9457 §3.1.1).
pub mod problem_type {
    pub const VALIDATION: &str = "/problems/validation";
    pub const CONFLICT: &str = "/problems/conflict";
    pub const INVALID_STATE: &str = "/problems/invalid-state";
    pub const NO_ROUTE: &str = "/problems/no-route";
    pub const NOT_FOUND: &str = "/problems/not-found";
    pub const UNAUTHORIZED: &str = "/problems/unauthorized";
    pub const MALFORMED: &str = "/problems/malformed-json";
    pub const TOO_LARGE: &str = "/problems/body-too-large";
    pub const MEDIA_TYPE: &str = "/problems/unsupported-media-type";
    pub const MALFORMED_MULTIPART: &str = "/problems/malformed-multipart";
    pub const UNAVAILABLE: &str = "/problems/unavailable";
    pub const BLANK: &str = "about:blank";
}

/// One invalid field in a 422 problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct FieldError {
    /// The field's path in the request, e.g. `username`, `skills[2]`, or `limit` for a
    /// query parameter.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem details object (`application/problem+json`).
#[derive(Clone, Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI reference identifying the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For 422: every invalid field.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errors: Option<Vec<FieldError>>,
}

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid API key is required (Authorization: Bearer <key>)")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A body of another content type than the route takes (415), e.g. an upload
    /// that is not `multipart/form-data`.
    #[error("expected Content-Type: {0}")]
    WrongMediaType(&'static str),
    /// A `multipart/form-data` body that does not parse (400).
    #[error("malformed multipart body: {0}")]
    MalformedMultipart(String),
    #[error("{}", validation_detail(.0))]
    Validation(Vec<FieldError>),
    #[error("{field} already exists")]
    Conflict { field: String },
    /// The resource exists but is not in a state that allows the request (409), e.g.
    /// hanging up a call that has ended.
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal,
}

fn validation_detail(errors: &[FieldError]) -> String {
    match errors {
        [one] => format!("{}: {}", one.field, one.message),
        _ => format!(
            "invalid fields: {}",
            errors
                .iter()
                .map(|e| e.field.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::WrongMediaType(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::MalformedJson(_) | ApiError::MalformedMultipart(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict { .. } | ApiError::InvalidState(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem_type(&self) -> &'static str {
        use problem_type as t;
        match self {
            ApiError::Unauthorized => t::UNAUTHORIZED,
            ApiError::NotFound(_) => t::NOT_FOUND,
            ApiError::NoRoute { .. } => t::NO_ROUTE,
            ApiError::PayloadTooLarge { .. } => t::TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::WrongMediaType(_) => t::MEDIA_TYPE,
            ApiError::MalformedJson(_) => t::MALFORMED,
            ApiError::MalformedMultipart(_) => t::MALFORMED_MULTIPART,
            ApiError::Validation(_) => t::VALIDATION,
            ApiError::Conflict { .. } => t::CONFLICT,
            ApiError::InvalidState(_) => t::INVALID_STATE,
            ApiError::Unavailable(_) => t::UNAVAILABLE,
            ApiError::Internal => t::BLANK,
        }
    }

    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let errors = match self {
            ApiError::Validation(errors) => Some(errors.clone()),
            ApiError::Conflict { field } => {
                Some(vec![FieldError::new(field.clone(), "already exists")])
            }
            _ => None,
        };
        Problem {
            problem_type: self.problem_type().to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors,
        }
    }
}

/// Render a problem with the right content type (and a Bearer challenge for 401).
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"voxgate\""),
        );
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&self.to_problem())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".to_owned()),
            StoreError::Conflict { field } => ApiError::Conflict {
                field: field.to_owned(),
            },
            StoreError::InUse(why) => ApiError::InvalidState(why),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::Internal
            }
        }
    }
}

/// A JSON request body. Unlike `axum::Json` every failure is a problem: 415 without a
/// JSON content type, 413 over `api.max_body_bytes`, 400 for malformed JSON, and 422 when
/// the JSON does not fit the schema, naming the field (unknown fields included).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(&req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// An optional JSON body (`Option<ApiJson<T>>`): an empty body is `None`, whatever its
/// content type; anything else must be JSON that fits `T`, as for [`ApiJson`].
impl<T, S> OptionalFromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let json = is_json(&req);
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&bytes).map(|v| Some(ApiJson(v)))
    }
}

/// Does the request say it is JSON (`application/json` or `…+json`)?
fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"))
}

/// The request body (413 over the limit).
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(usize::MAX, |l| l.0);
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::MalformedJson(e.body_text())
        }
    })?;
    Ok(bytes)
}

/// The configured body limit, put into request extensions so errors can state it.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// Parse JSON in two steps so syntax errors (400) and schema errors (422) differ.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    integral_floats_as_integers(&mut value);
    // Every body is an object (or null where the body is optional). serde would read a
    // struct from an array of its fields in order (`[null, null]`), a form the document
    // does not offer.
    if value.is_array() {
        return Err(ApiError::field(".", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        ApiError::Validation(vec![field_error(&path, &message)])
    })
}

/// JSON has one number type: `12.0` is the integer 12 (JSON Schema's `integer` accepts
/// any number with a zero fractional part, and clients written in languages without an
/// integer type send such numbers). serde would refuse them for integer fields, so they
/// are turned into integers before the schema is applied; fields of a float type take
/// integers as well.
fn integral_floats_as_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                // Exactly representable range only: beyond 2^53 a float is not one integer.
                const EXACT: f64 = 9_007_199_254_740_992.0;
                if f.fract() == 0.0 && f.abs() <= EXACT {
                    #[allow(clippy::cast_possible_truncation)]
                    let i = f as i64;
                    *v = Value::from(i);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// Turn a serde error at `path` into a field error; "missing field `x`" is reported
/// at its parent's path, so the name is taken from the message.
fn field_error(path: &str, message: &str) -> FieldError {
    let base = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some((name, _)) = rest.split_once('`') {
            let field = if base.is_empty() {
                name.to_owned()
            } else {
                format!("{base}.{name}")
            };
            return FieldError::new(field, "is required");
        }
    }
    if message.starts_with("unknown field `") {
        let msg = message
            .split_once(", expected")
            .map_or(message, |(head, _)| head);
        return FieldError::new(
            if base.is_empty() { "." } else { base },
            format!("{msg}: not a field of this resource"),
        );
    }
    FieldError::new(if base.is_empty() { "." } else { base }, message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        name: String,
        n: Option<i64>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        x: u8,
    }

    fn field(json: &str) -> String {
        match parse_json::<T>(json.as_bytes()) {
            Err(ApiError::Validation(v)) => v[0].field.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_fields() {
        assert_eq!(field(r#"{}"#), "name");
        assert_eq!(field(r#"{"name": 1}"#), "name");
        assert_eq!(field(r#"{"name": "a", "n": "x"}"#), "n");
        assert_eq!(field(r#"{"name": "a", "bogus": 1}"#), "bogus");
        assert_eq!(field(r#"{"name": "a", "inner": {}}"#), "inner.x");
        assert_eq!(field(r#"{"name": "a", "inner": {"x": 300}}"#), "inner.x");
        assert!(matches!(
            parse_json::<T>(b"{\"name\": "),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn integral_floats_are_integers() {
        let t: T = parse_json(br#"{"name": "a", "n": 12.0, "inner": {"x": 3.0}}"#).unwrap();
        assert_eq!((t.n, t.inner.map(|i| i.x)), (Some(12), Some(3)));
        assert_eq!(field(r#"{"name": "a", "n": 12.5}"#), "n");
        assert_eq!(field(r#"{"name": "a", "n": 1e300}"#), "n");
        assert_eq!(field(r#"["a", null, null]"#), ".");
    }
}
