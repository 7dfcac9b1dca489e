//! Bearer API-key authentication as an extractor: put `Authed` first in a handler's
//! arguments so a missing key is a 401 before the body is read.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::error::ApiError;
use super::AppState;
use crate::store::ApiKey;

/// Proof that the request carried a valid API key.
#[derive(Clone, Debug)]
pub struct Authed {
    pub key: ApiKey,
}

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        authorize(state, &parts.headers).await
    }
}

/// Check `Authorization: Bearer <key>` against the stored key hashes.
pub async fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Authed, ApiError> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or(ApiError::Unauthorized)?;
    match state.store.verify_api_key(presented).await? {
        Some(key) => Ok(Authed { key }),
        None => Err(ApiError::Unauthorized),
    }
}
