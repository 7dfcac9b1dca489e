//! Cursor pagination: `?limit=50&after=<id>` → `{"data": [...], "next": "<id>"|null}`.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use utoipa::IntoParams;

use super::error::{ApiError, FieldError};
use super::rules::{Chars, Int, Text};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;
/// `limit`: the page size.
pub const LIMIT: Int = Int::new(1, MAX_LIMIT as i64);
/// `after`: an id from a previous page's `next`.
pub const AFTER: Text = Text::new(1, 128, Chars::Printable);

fn limit_schema() -> utoipa::openapi::schema::Schema {
    LIMIT.schema()
}

fn after_schema() -> utoipa::openapi::schema::Schema {
    AFTER.schema()
}

/// Validated pagination parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pagination {
    pub limit: usize,
    pub after: Option<String>,
}

/// The query parameters as documented in OpenAPI.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    /// Page size, 1..=200 (default 50).
    #[param(schema_with = limit_schema, default = 50)]
    limit: Option<u32>,
    /// Return items after this id (the `next` of the previous page); 1-128 characters.
    #[param(schema_with = after_schema)]
    after: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::field(".", format!("bad query string: {}", e.body_text())))?;
        let mut page = Pagination {
            limit: DEFAULT_LIMIT,
            after: None,
        };
        let mut errors = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "limit" => match v.trim().parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => page.limit = n,
                    _ => errors.push(FieldError::new(
                        "limit",
                        format!(
                            "must be an integer from {} to {}, got {v:?}",
                            LIMIT.min, LIMIT.max
                        ),
                    )),
                },
                "after" => {
                    if AFTER.is_valid(&v) {
                        page.after = Some(v);
                    } else {
                        errors.push(FieldError::new(
                            "after",
                            format!("must be an id from `next` ({})", AFTER.message()),
                        ));
                    }
                }
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}
