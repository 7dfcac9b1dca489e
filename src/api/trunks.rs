//! `/v1/trunks`: carrier trunks (SPEC §4; docs/trunks.md). A `provider` preset fills what
//! the request leaves out; PATCH is a JSON merge patch (RFC 7396) of the trunk's settings:
//! fields present change, nested objects merge, and null returns a field to its preset
//! (or clears it where the preset has none). Passwords are write-only.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authed;
use super::error::{parse_json, ApiError, ApiJson, FieldError, Problem};
use super::pagination::{PageQuery, Pagination};
use super::{time_format, AppState};
use crate::events::AppEvent;
use crate::sip::registration::RegistrationStates;
use crate::store::{StoreError, TrunkRow};
use crate::trunks::cost::{format_amount, is_currency, parse_amount};
use crate::trunks::directory::Cidr;
use crate::trunks::number::{self, is_country_code};
use crate::trunks::presets::preset;
use crate::trunks::{
    Inbound, NumberFormat, Outbound, Provider, Rate, SimOutcome, SimulateRule, TrunkConfig,
    TrunkTransport, CODEC_NAMES,
};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_trunk, list_trunks))
        .routes(routes!(get_trunk, patch_trunk, delete_trunk))
}

/// How voxgate reaches the carrier.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundSpec {
    /// The carrier's SIP host name or IP address (required, except on `simulated` trunks).
    #[schema(example = "example.pstn.twilio.com")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Default: the preset's, else resolved by RFC 3263 (SRV, then 5060/5061).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// `udp`, `tcp` or `tls`; default: the preset's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<TrunkTransport>,
    /// Digest username voxgate answers the carrier's 401/407 with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[schema(write_only)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Register to the carrier with the credentials (as FreeSWITCH gateways do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<bool>,
    /// REGISTER Expires in seconds, 60..=86400; default 3600.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60, maximum = 86400)]
    pub register_expires: Option<u32>,
}

/// Who may send calls in on this trunk: its addresses, or its credentials.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundSpec {
    /// IPv4/IPv6 networks (`192.0.2.0/24`, `2001:db8::/32`) or addresses admitted
    /// without credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Digest credentials the carrier may authenticate with instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[schema(write_only)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `rate.per_minute`: a string or a number (the server reads either).
fn per_minute_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Number]))
            .build(),
    )
}
/// A price for outbound calls.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    /// Price per minute: a decimal string (or number) with at most 6 decimals.
    #[schema(schema_with = per_minute_schema, example = "0.0130")]
    pub per_minute: Value,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
    /// Billing step after the minimum, 1..=3600 seconds; default 60.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600, default = 60)]
    pub increment_seconds: Option<u32>,
    /// Billed at least this long once answered, 0..=3600 seconds; default 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 3600, default = 0)]
    pub minimum_seconds: Option<u32>,
}

/// Body of `POST /v1/trunks` (and the shape a PATCH merges into). Fields left out take
/// the provider's preset.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTrunk {
    /// Unique: 1-64 characters from `A-Z a-z 0-9 . _ -`, not starting with `trk_`.
    #[schema(example = "twilio-us")]
    pub name: String,
    /// Immutable.
    pub provider: Provider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundSpec>,
    /// Codec names in preference order: `PCMU`, `PCMA`, `G722`, `opus`,
    /// `telephone-event`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codecs: Option<Vec<String>>,
    /// INVITEs per second to the carrier (spaced evenly); 0: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub max_cps: Option<u32>,
    /// INVITEs in any 60 s; 0: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 60000)]
    pub max_calls_per_minute: Option<u32>,
    /// Calls at once; 0: no limit. Calls over a limit wait, `queued`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100000)]
    pub max_concurrent_calls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_format: Option<NumberFormat>,
    /// The number shown to called parties when a call brings none (read as E.164).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "+14155550100")]
    pub caller_id: Option<String>,
    /// The trunk's country code (`91`): national numbers are read as this country's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "1")]
    pub country_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateSpec>,
    /// `simulated` trunks only: outcome rules, first match wins. Default: answer every
    /// number after 1 s with a tone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulate: Option<Vec<SimulateRule>>,
    /// The trunk agents' softphones dial external numbers through. Setting it clears it
    /// on the other trunks; with exactly one trunk, that trunk is the default anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_outbound: Option<bool>,
}

/// Body of `PATCH /v1/trunks/{id}`: any fields of a trunk, merged into its settings
/// (RFC 7396: nested objects merge; null returns a field to its preset or clears it).
/// `provider` cannot change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PatchTrunk {
    /// A new name; it cannot be cleared (null is a 422).
    #[schema(nullable = false)]
    name: Option<String>,
    outbound: Option<OutboundSpec>,
    inbound: Option<InboundSpec>,
    codecs: Option<Vec<String>>,
    max_cps: Option<u32>,
    max_calls_per_minute: Option<u32>,
    max_concurrent_calls: Option<u32>,
    number_format: Option<NumberFormat>,
    caller_id: Option<String>,
    country_code: Option<String>,
    rate: Option<RateSpec>,
    simulate: Option<Vec<SimulateRule>>,
    default_outbound: Option<bool>,
}

/// The outbound settings as shown (no password).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OutboundView {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub transport: TrunkTransport,
    pub username: Option<String>,
    pub register: bool,
    pub register_expires: Option<u32>,
}

/// The inbound settings as shown (no password).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct InboundView {
    pub allowed_cidrs: Vec<String>,
    pub username: Option<String>,
}

/// A rate as shown: the price as a decimal string.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RateView {
    #[schema(example = "0.013")]
    pub per_minute: String,
    pub currency: String,
    pub increment_seconds: u32,
    pub minimum_seconds: u32,
}

pub use crate::sip::registration::RegistrationView;

/// A trunk as the API shows it (never its passwords).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TrunkView {
    #[schema(example = "trk_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    pub name: String,
    pub provider: Provider,
    pub outbound: OutboundView,
    pub inbound: InboundView,
    pub codecs: Vec<String>,
    pub max_cps: Option<u32>,
    pub max_calls_per_minute: Option<u32>,
    pub max_concurrent_calls: Option<u32>,
    pub number_format: NumberFormat,
    pub caller_id: Option<String>,
    pub country_code: Option<String>,
    pub rate: Option<RateView>,
    pub simulate: Vec<SimulateRule>,
    /// The flag as set; with exactly one trunk, that trunk is the default anyway.
    pub default_outbound: bool,
    pub registration: RegistrationView,
    #[serde(with = "time_format")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_format")]
    pub updated_at: DateTime<Utc>,
}

/// A page of trunks.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TrunkList {
    pub data: Vec<TrunkView>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<String>,
}

/// The trunk's registration as the SIP core last published it: `disabled` when the
/// trunk does not register, `registering` until the core has reported on it.
fn registration_view(id: &str, register: bool, states: &RegistrationStates) -> RegistrationView {
    let reported = states.read().ok().and_then(|s| s.get(id).cloned());
    match (register, reported) {
        (false, _) => RegistrationView::state("disabled"),
        (true, Some(v)) => v,
        (true, None) => RegistrationView::state("registering"),
    }
}

fn view(t: TrunkRow, registrations: &RegistrationStates) -> TrunkView {
    let c = t.config;
    let registration = registration_view(&t.id, c.outbound.register, registrations);
    TrunkView {
        id: t.id,
        name: c.name,
        provider: c.provider,
        registration,
        outbound: OutboundView {
            host: c.outbound.host,
            port: c.outbound.port,
            transport: c.outbound.transport,
            username: c.outbound.username,
            register: c.outbound.register,
            register_expires: c.outbound.register_expires,
        },
        inbound: InboundView {
            allowed_cidrs: c.inbound.allowed_cidrs,
            username: c.inbound.username,
        },
        codecs: c.codecs,
        max_cps: c.max_cps,
        max_calls_per_minute: c.max_calls_per_minute,
        max_concurrent_calls: c.max_concurrent_calls,
        number_format: c.number_format,
        caller_id: c.caller_id,
        country_code: c.country_code,
        rate: c.rate.map(|r| RateView {
            per_minute: format_amount(r.per_minute_micros),
            currency: r.currency,
            increment_seconds: r.increment_seconds,
            minimum_seconds: r.minimum_seconds,
        }),
        simulate: c.simulate,
        default_outbound: c.default_outbound,
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}

/// The stored settings as a request body (passwords included), for merging a PATCH.
fn spec_of(c: &TrunkConfig) -> CreateTrunk {
    CreateTrunk {
        name: c.name.clone(),
        provider: c.provider,
        outbound: Some(OutboundSpec {
            host: c.outbound.host.clone(),
            port: c.outbound.port,
            transport: Some(c.outbound.transport),
            username: c.outbound.username.clone(),
            password: c.outbound.password.clone(),
            register: Some(c.outbound.register),
            register_expires: c.outbound.register_expires,
        }),
        inbound: Some(InboundSpec {
            allowed_cidrs: Some(c.inbound.allowed_cidrs.clone()),
            username: c.inbound.username.clone(),
            password: c.inbound.password.clone(),
        }),
        codecs: Some(c.codecs.clone()),
        max_cps: c.max_cps,
        max_calls_per_minute: c.max_calls_per_minute,
        max_concurrent_calls: c.max_concurrent_calls,
        number_format: Some(c.number_format),
        caller_id: c.caller_id.clone(),
        country_code: c.country_code.clone(),
        rate: c.rate.as_ref().map(|r| RateSpec {
            per_minute: Value::String(format_amount(r.per_minute_micros)),
            currency: r.currency.clone(),
            increment_seconds: Some(r.increment_seconds),
            minimum_seconds: Some(r.minimum_seconds),
        }),
        simulate: Some(c.simulate.clone()),
        default_outbound: Some(c.default_outbound),
    }
}

/// RFC 7396 JSON merge patch.
/// Every member of a merge patch must name a field, null or not: RFC 7396 drops a null
/// member wherever it is, so a patch such as `{"typo": null}` would merge into nothing and
/// pass the check of the merged result (found by schemathesis). `fields` are the top
/// level's names, `nested` those inside the objects that merge member by member. The
/// names come from the schemas the document shows ([`schema_fields`]).
pub(super) fn check_patch_members(
    patch: &serde_json::Map<String, Value>,
    fields: &[String],
    nested: &[(&str, Vec<String>)],
) -> Result<(), ApiError> {
    for (k, v) in patch {
        if !fields.contains(k) {
            return Err(ApiError::field(k, format!("unknown field {k:?}")));
        }
        let (Some((_, inner)), Value::Object(members)) =
            (nested.iter().find(|(name, _)| name == k), v)
        else {
            continue;
        };
        if let Some(n) = members.keys().find(|n| !inner.contains(n)) {
            return Err(ApiError::field(
                format!("{k}.{n}"),
                format!("unknown field {n:?}"),
            ));
        }
    }
    Ok(())
}

/// The property names of `T`'s schema.
pub(super) fn schema_fields<T: utoipa::PartialSchema>() -> Vec<String> {
    match T::schema() {
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(o)) => {
            o.properties.keys().cloned().collect()
        }
        _ => Vec::new(),
    }
}

pub(super) fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        merge(t.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}

const NAME_MAX: usize = 64;
const HOST_MAX: usize = 253;
const CRED_MAX: usize = 128;
const CIDRS_MAX: usize = 100;
const CODECS_MAX: usize = 10;
const RULES_MAX: usize = 100;
const PATTERN_MAX: usize = 32;
const MAX_CPS: u32 = 1000;
const MAX_PER_MINUTE: u32 = 60_000;
const MAX_CONCURRENT: u32 = 100_000;
const EXPIRES: std::ops::RangeInclusive<u32> = 60..=86_400;
const BILLING: u32 = 3600;
const AFTER_MAX: u32 = 600;

fn is_token(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A host name (RFC 1123 labels) or an IP literal (IPv6 possibly in brackets).
fn is_host(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !s.is_empty()
        && s.len() <= HOST_MAX
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn check_text(field: &str, v: Option<&String>, errors: &mut Vec<FieldError>) {
    if let Some(v) = v {
        if v.is_empty() || v.chars().count() > CRED_MAX || v.chars().any(char::is_control) {
            errors.push(FieldError::new(
                field,
                format!("must be 1-{CRED_MAX} characters, no control characters"),
            ));
        }
    }
}

fn check_max(field: &str, v: Option<u32>, max: u32, errors: &mut Vec<FieldError>) {
    if let Some(v) = v {
        if v > max {
            errors.push(FieldError::new(
                field,
                format!("must be from 0 (no limit) to {max}, got {v}"),
            ));
        }
    }
}

/// Validate a trunk's settings and fill the preset's defaults in.
fn resolve(spec: CreateTrunk) -> Result<TrunkConfig, ApiError> {
    let mut errors = Vec::new();
    let p = preset(spec.provider);
    let simulated = spec.provider == Provider::Simulated;

    if spec.name.is_empty() || spec.name.len() > NAME_MAX || !is_token(&spec.name) {
        errors.push(FieldError::new(
            "name",
            format!("must be 1-{NAME_MAX} characters from A-Z a-z 0-9 . _ -"),
        ));
    } else if spec.name.starts_with("trk_") {
        errors.push(FieldError::new(
            "name",
            "must not start with trk_ (that is how trunk ids start)",
        ));
    }

    let o = spec.outbound.unwrap_or_default();
    let transport = o.transport.unwrap_or(p.transport);
    // An IPv6 literal is kept without brackets (the Request-URI adds them).
    let host = o.host.map(|h| {
        let h = h.trim().to_ascii_lowercase();
        match h.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
            Ok(ip) if is_host(&h) => ip.to_string(),
            _ => h,
        }
    });
    match &host {
        Some(_) if simulated => errors.push(FieldError::new(
            "outbound.host",
            "a simulated trunk has no carrier to reach",
        )),
        Some(h) if !is_host(h) => errors.push(FieldError::new(
            "outbound.host",
            "must be a host name or an IP address",
        )),
        None if p.host_required => {
            errors.push(FieldError::new("outbound.host", "is required"));
        }
        _ => {}
    }
    if o.port == Some(0) {
        errors.push(FieldError::new("outbound.port", "must be from 1 to 65535"));
    }
    check_text("outbound.username", o.username.as_ref(), &mut errors);
    check_text("outbound.password", o.password.as_ref(), &mut errors);
    if o.password.is_some() && o.username.is_none() {
        errors.push(FieldError::new(
            "outbound.username",
            "is required with outbound.password",
        ));
    }
    let register = o.register.unwrap_or(false);
    if register && (o.username.is_none() || o.password.is_none()) {
        errors.push(FieldError::new(
            "outbound.register",
            "needs outbound.username and outbound.password",
        ));
    }
    if register && simulated {
        errors.push(FieldError::new(
            "outbound.register",
            "a simulated trunk has no carrier to register to",
        ));
    }
    if let Some(e) = o.register_expires {
        if !EXPIRES.contains(&e) {
            errors.push(FieldError::new(
                "outbound.register_expires",
                format!(
                    "must be from {} to {}, got {e}",
                    EXPIRES.start(),
                    EXPIRES.end()
                ),
            ));
        }
    }
    let outbound = Outbound {
        host: if simulated { None } else { host },
        port: o.port.or_else(|| p.port_for(transport)),
        transport,
        username: o.username,
        password: o.password,
        register,
        register_expires: if register {
            Some(o.register_expires.unwrap_or(p.register_expires))
        } else {
            o.register_expires
        },
    };

    let i = spec.inbound.unwrap_or_default();
    let cidrs = i.allowed_cidrs.unwrap_or_default();
    if cidrs.len() > CIDRS_MAX {
        errors.push(FieldError::new(
            "inbound.allowed_cidrs",
            format!("at most {CIDRS_MAX} networks"),
        ));
    }
    let mut allowed_cidrs = Vec::with_capacity(cidrs.len());
    for (n, c) in cidrs.iter().enumerate() {
        match Cidr::parse(c) {
            Ok(cidr) => {
                let s = cidr.to_string();
                if !allowed_cidrs.contains(&s) {
                    allowed_cidrs.push(s);
                }
            }
            Err(e) => errors.push(FieldError::new(
                format!("inbound.allowed_cidrs[{n}]"),
                format!("{c:?} {e}"),
            )),
        }
    }
    check_text("inbound.username", i.username.as_ref(), &mut errors);
    check_text("inbound.password", i.password.as_ref(), &mut errors);
    if i.username.is_some() != i.password.is_some() {
        errors.push(FieldError::new(
            if i.username.is_some() {
                "inbound.password"
            } else {
                "inbound.username"
            },
            "inbound credentials need both username and password",
        ));
    }
    let inbound = Inbound {
        allowed_cidrs,
        username: i.username,
        password: i.password,
    };

    let codec_names = spec
        .codecs
        .unwrap_or_else(|| p.codecs.iter().map(|&c| c.to_owned()).collect());
    if codec_names.len() > CODECS_MAX {
        errors.push(FieldError::new(
            "codecs",
            format!("at most {CODECS_MAX} codecs"),
        ));
    }
    let mut codecs: Vec<String> = Vec::new();
    for (n, name) in codec_names.iter().enumerate() {
        match CODEC_NAMES.iter().find(|c| c.eq_ignore_ascii_case(name)) {
            Some(c) => {
                if !codecs.iter().any(|x| x == c) {
                    codecs.push((*c).to_owned());
                }
            }
            None => errors.push(FieldError::new(
                format!("codecs[{n}]"),
                format!(
                    "{name:?} is not a codec voxgate speaks ({})",
                    CODEC_NAMES.join(", ")
                ),
            )),
        }
    }
    if !codecs.is_empty() && codecs.iter().all(|c| c == "telephone-event") {
        errors.push(FieldError::new(
            "codecs",
            "needs at least one voice codec besides telephone-event",
        ));
    }

    let max_cps = spec.max_cps.or(p.max_cps);
    let max_calls_per_minute = spec.max_calls_per_minute.or(p.max_calls_per_minute);
    let max_concurrent_calls = spec.max_concurrent_calls.or(p.max_concurrent_calls);
    check_max("max_cps", max_cps, MAX_CPS, &mut errors);
    check_max(
        "max_calls_per_minute",
        max_calls_per_minute,
        MAX_PER_MINUTE,
        &mut errors,
    );
    check_max(
        "max_concurrent_calls",
        max_concurrent_calls,
        MAX_CONCURRENT,
        &mut errors,
    );

    let number_format = spec.number_format.unwrap_or(p.number_format);
    let country_code = spec
        .country_code
        .map(|c| c.trim().trim_start_matches('+').to_owned())
        .or_else(|| p.country_code.map(str::to_owned))
        // India's national form implies India when nothing else is said.
        .or_else(|| (number_format == NumberFormat::InNational).then(|| "91".to_owned()));
    if let Some(cc) = &country_code {
        if !is_country_code(cc) {
            errors.push(FieldError::new(
                "country_code",
                "must be a country calling code: 1-3 digits, not starting with 0 (e.g. 1, 91)",
            ));
        }
    }
    let caller_id = match spec.caller_id {
        None => None,
        Some(c) => match number::parse(&c, country_code.as_deref()) {
            Ok(n) => Some(n.into_string()),
            Err(e) => {
                errors.push(FieldError::new("caller_id", format!("{c:?} {e}")));
                None
            }
        },
    };

    let rate = spec.rate.and_then(|r| {
        let per_minute = match &r.per_minute {
            Value::String(s) => parse_amount(s).map_err(|e| e.to_string()),
            Value::Number(n) => parse_amount(&n.to_string()).map_err(|e| e.to_string()),
            _ => Err("must be a decimal string such as \"0.0130\"".to_owned()),
        };
        let per_minute = match per_minute {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(FieldError::new("rate.per_minute", e));
                None
            }
        };
        let currency = r.currency.trim().to_ascii_uppercase();
        if !is_currency(&currency) {
            errors.push(FieldError::new(
                "rate.currency",
                "must be an ISO 4217 code such as USD or INR",
            ));
        }
        let increment_seconds = r.increment_seconds.unwrap_or(60);
        if !(1..=BILLING).contains(&increment_seconds) {
            errors.push(FieldError::new(
                "rate.increment_seconds",
                format!("must be from 1 to {BILLING}"),
            ));
        }
        let minimum_seconds = r.minimum_seconds.unwrap_or(0);
        if minimum_seconds > BILLING {
            errors.push(FieldError::new(
                "rate.minimum_seconds",
                format!("must be from 0 to {BILLING}"),
            ));
        }
        per_minute.map(|per_minute_micros| Rate {
            per_minute_micros,
            currency,
            increment_seconds,
            minimum_seconds,
        })
    });

    let simulate = match (spec.simulate, simulated) {
        (Some(rules), false) if !rules.is_empty() => {
            errors.push(FieldError::new(
                "simulate",
                "only simulated trunks take simulate rules",
            ));
            Vec::new()
        }
        (None, true) => vec![SimulateRule {
            pattern: "*".to_owned(),
            outcome: SimOutcome::Answer,
            after_seconds: 1,
            play: Some("tone".to_owned()),
        }],
        (rules, _) => rules.unwrap_or_default(),
    };
    if simulate.len() > RULES_MAX {
        errors.push(FieldError::new(
            "simulate",
            format!("at most {RULES_MAX} rules"),
        ));
    }
    for (n, r) in simulate.iter().enumerate() {
        let ok = !r.pattern.is_empty()
            && r.pattern.len() <= PATTERN_MAX
            && r.pattern.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_digit() || b == b'*' || b == b'?' || (b == b'+' && i == 0)
            });
        if !ok {
            errors.push(FieldError::new(
                format!("simulate[{n}].pattern"),
                format!(
                    "must be an E.164 number or pattern of up to {PATTERN_MAX} characters \
                     (+, digits, * for any digits, ? for one)"
                ),
            ));
        }
        if r.after_seconds > AFTER_MAX {
            errors.push(FieldError::new(
                format!("simulate[{n}].after_seconds"),
                format!("must be from 0 to {AFTER_MAX}"),
            ));
        }
        if let Some(play) = &r.play {
            if r.outcome != SimOutcome::Answer {
                errors.push(FieldError::new(
                    format!("simulate[{n}].play"),
                    "only an answer plays anything",
                ));
            } else if play != "tone" {
                // Prompts (`prm_…`) come with the prompts resource (the media issue);
                // until then nothing but the tone can be played.
                errors.push(FieldError::new(
                    format!("simulate[{n}].play"),
                    "must be tone (prompts cannot be played yet)",
                ));
            }
        }
    }

    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(TrunkConfig {
        name: spec.name,
        provider: spec.provider,
        outbound,
        inbound,
        codecs,
        max_cps,
        max_calls_per_minute,
        max_concurrent_calls,
        number_format,
        caller_id,
        country_code,
        rate,
        simulate,
        default_outbound: spec.default_outbound.unwrap_or(false),
    })
}

pub(crate) async fn find(state: &AppState, reference: &str) -> Result<TrunkRow, ApiError> {
    match state.store.find_trunk(reference).await {
        Err(StoreError::NotFound) => Err(ApiError::NotFound(format!(
            "no trunk with id or name {reference:?}"
        ))),
        other => Ok(other?),
    }
}

/// After a committed change to trunks or numbers: reload the engine's directory and tell
/// whoever listens.
pub(crate) async fn changed(state: &AppState) {
    if let Err(e) = state.trunks.reload(&state.store).await {
        // The change is committed; the next reload picks it up.
        tracing::error!(error = %e, "reloading the trunk directory failed");
    }
    let _ = state.events.send(AppEvent::TrunksChanged);
}

/// Create a trunk.
#[utoipa::path(
    post, path = "/v1/trunks", tag = "trunks",
    request_body = CreateTrunk,
    responses(
        (status = 201, description = "Created, with the preset's defaults filled in", body = TrunkView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (the problem names it)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_trunk(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<CreateTrunk>,
) -> Result<impl IntoResponse, ApiError> {
    let config = resolve(body)?;
    let trunk = state.store.create_trunk(&config).await?;
    changed(&state).await;
    let location = format!("/v1/trunks/{}", trunk.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(trunk, &state.trunk_registrations)),
    ))
}

/// List trunks in creation order.
#[utoipa::path(
    get, path = "/v1/trunks", tag = "trunks",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of trunks", body = TrunkList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_trunks(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    page: Pagination,
) -> Result<Json<TrunkList>, ApiError> {
    let p = state
        .store
        .list_trunks(page.limit, page.after.as_deref())
        .await?;
    Ok(Json(TrunkList {
        data: p
            .data
            .into_iter()
            .map(|t| view(t, &state.trunk_registrations))
            .collect(),
        next: p.next,
    }))
}

/// Get a trunk by id or name.
#[utoipa::path(
    get, path = "/v1/trunks/{id}", tag = "trunks",
    params(("id" = String, Path, description = "Trunk id or name")),
    responses(
        (status = 200, description = "The trunk", body = TrunkView),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such trunk", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_trunk(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<TrunkView>, ApiError> {
    Ok(Json(view(
        find(&state, &id).await?,
        &state.trunk_registrations,
    )))
}

/// Change a trunk: a JSON merge patch of its settings.
#[utoipa::path(
    patch, path = "/v1/trunks/{id}", tag = "trunks",
    params(("id" = String, Path, description = "Trunk id or name")),
    request_body = PatchTrunk,
    responses(
        (status = 200, description = "The updated trunk", body = TrunkView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such trunk", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new name exists", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (provider is immutable)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn patch_trunk(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<TrunkView>, ApiError> {
    let Value::Object(patch) = body else {
        return Err(ApiError::field(".", "must be a JSON object"));
    };
    // `provider` may be repeated unchanged (checked below).
    let mut fields = schema_fields::<PatchTrunk>();
    fields.push("provider".to_owned());
    check_patch_members(
        &patch,
        &fields,
        &[
            ("outbound", schema_fields::<OutboundSpec>()),
            ("inbound", schema_fields::<InboundSpec>()),
            ("rate", schema_fields::<RateSpec>()),
        ],
    )?;
    let trunk = find(&state, &id).await?;
    if let Some(p) = patch.get("provider") {
        if p.as_str() != Some(trunk.config.provider.as_str()) {
            return Err(ApiError::field(
                "provider",
                "is immutable; create a new trunk",
            ));
        }
    }
    let mut merged =
        serde_json::to_value(spec_of(&trunk.config)).map_err(|_| ApiError::Internal)?;
    merge(&mut merged, Value::Object(patch));
    let bytes = serde_json::to_vec(&merged).map_err(|_| ApiError::Internal)?;
    let spec: CreateTrunk = parse_json(&bytes)?;
    let config = resolve(spec)?;
    let updated = state.store.update_trunk(&trunk.id, &config).await?;
    changed(&state).await;
    Ok(Json(view(updated, &state.trunk_registrations)))
}

/// Delete a trunk that has no numbers (its calls keep their records).
#[utoipa::path(
    delete, path = "/v1/trunks/{id}", tag = "trunks",
    params(("id" = String, Path, description = "Trunk id or name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such trunk", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The trunk still has numbers", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_trunk(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let trunk = find(&state, &id).await?;
    state.store.delete_trunk(&trunk.id).await?;
    changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(v: Value) -> CreateTrunk {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn fields(v: Value) -> Vec<String> {
        match resolve(spec(v)) {
            Err(ApiError::Validation(e)) => e.into_iter().map(|f| f.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn presets_fill_and_fields_override() {
        let c = resolve(spec(json!({
            "name": "ex", "provider": "exotel", "outbound": {"host": "sip.exotel.example"}
        })))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.outbound.transport, TrunkTransport::Tcp);
        assert_eq!(c.outbound.port, Some(5070));
        assert_eq!(c.country_code.as_deref(), Some("91"));
        assert_eq!(c.max_calls_per_minute, Some(200));
        assert!(c.codecs.contains(&"telephone-event".to_owned()));
        let c = resolve(spec(json!({
            "name": "ex", "provider": "exotel",
            "outbound": {"host": "sip.exotel.example", "transport": "tls", "port": 443},
            "max_calls_per_minute": 50, "codecs": ["pcma"],
            "caller_id": "08000000001", "rate": {"per_minute": 0.5, "currency": "inr"}
        })))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.outbound.transport, c.outbound.port),
            (TrunkTransport::Tls, Some(443))
        );
        assert_eq!(c.max_calls_per_minute, Some(50));
        assert_eq!(c.codecs, vec!["PCMA".to_owned()]);
        assert_eq!(c.caller_id.as_deref(), Some("+918000000001"));
        let rate = c.rate.unwrap_or_else(|| panic!("rate"));
        assert_eq!(
            (
                rate.per_minute_micros,
                rate.currency.as_str(),
                rate.increment_seconds
            ),
            (500_000, "INR", 60)
        );
        let national = resolve(spec(json!({
            "name": "in", "provider": "generic", "outbound": {"host": "h.example"},
            "number_format": "in_national"
        })))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(national.country_code.as_deref(), Some("91"));
        let sim = resolve(spec(json!({"name": "sim", "provider": "simulated"})))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sim.simulate.len(), 1);
        let v6 = resolve(spec(json!({
            "name": "v6", "provider": "generic", "outbound": {"host": "[2001:DB8::10]"}
        })))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v6.outbound.host.as_deref(), Some("2001:db8::10"));
        assert_eq!(
            fields(
                json!({"name": "v6", "provider": "generic", "outbound": {"host": "2001:db8::10]"}})
            ),
            ["outbound.host"]
        );
        assert!(sim.outbound.host.is_none());
    }

    #[test]
    fn validation_names_fields() {
        assert_eq!(
            fields(json!({"name": "t", "provider": "twilio"})),
            ["outbound.host"]
        );
        assert_eq!(
            fields(json!({"name": "trk_x", "provider": "generic", "outbound": {"host": "a..b"}})),
            ["name", "outbound.host"]
        );
        assert_eq!(
            fields(json!({"name": "g", "provider": "generic",
                "outbound": {"host": "h.example", "register": true},
                "inbound": {"allowed_cidrs": ["10.0.0.0/8", "10.1.2.3/8", "x"]},
                "codecs": ["G729"], "max_cps": 5000, "country_code": "0",
                "rate": {"per_minute": "-1", "currency": "dollars"},
                "simulate": [{"pattern": "*", "outcome": "busy"}]})),
            [
                "outbound.register",
                "inbound.allowed_cidrs[1]",
                "inbound.allowed_cidrs[2]",
                "codecs[0]",
                "max_cps",
                "country_code",
                "rate.per_minute",
                "rate.currency",
                "simulate"
            ]
        );
        assert_eq!(
            fields(json!({"name": "s", "provider": "simulated",
                "simulate": [{"pattern": "+1-415", "outcome": "busy", "play": "tone"}]})),
            ["simulate[0].pattern", "simulate[0].play"]
        );
    }

    #[test]
    fn merge_patch() {
        let mut v = json!({"a": 1, "o": {"x": 1, "y": 2}, "keep": true});
        merge(
            &mut v,
            json!({"a": null, "o": {"y": 3, "z": 4}, "n": "new"}),
        );
        assert_eq!(
            v,
            json!({"o": {"x": 1, "y": 3, "z": 4}, "keep": true, "n": "new"})
        );
    }
}
