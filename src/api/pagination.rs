//! Cursor pagination: `?limit=50&after=<id>` → `{"data": [...], "next": "<id>"|null}`.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use utoipa::IntoParams;

use super::error::{ApiError, FieldError};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

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
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<u32>,
    /// Return items after this id (the `next` of the previous page).
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
                        format!("must be an integer from 1 to {MAX_LIMIT}, got {v:?}"),
                    )),
                },
                "after" => {
                    if v.is_empty() || v.len() > 128 {
                        errors.push(FieldError::new("after", "must be an id from `next`"));
                    } else {
                        page.after = Some(v);
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
