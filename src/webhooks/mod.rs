//! Webhook delivery (SPEC §5, docs/webhooks.md): a worker that leases due events from the
//! outbox (`webhook_events`), POSTs each one signed, logs every attempt and retries with
//! exponential backoff until `webhooks.retry_for_seconds` after the event was created.
//!
//! At-least-once: an event leaves the outbox only once a 2xx came back (or it was given
//! up). A crash mid-delivery leaves the event leased; the lease expires and it is sent
//! again. In order per call: the store leases an event only when every older event of
//! its chain (same destination and call) was delivered or given up.
//!
//! The worker wakes when the store commits new rows (a `Notify`), when a delivery
//! finishes (the next event of its chain may be due), when the earliest retry comes due,
//! and at least every [`POLL`] (rows written by other nodes on one PostgreSQL).

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng as _;
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::WebhooksConfig;
use crate::store::{AttemptResult, ClaimedEvent, NextStep, Store};

/// Header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Voxgate-Signature";
/// Header carrying the event id (the envelope's `id`), for de-duplication.
pub const EVENT_ID_HEADER: &str = "Voxgate-Event-Id";

/// The longest wait between two attempts (SPEC §5).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// Longest sleep without looking at the outbox.
const POLL: Duration = Duration::from_secs(1);
/// Deliveries in flight at once, over all destinations.
const MAX_IN_FLIGHT: usize = 32;
/// A lease outlives the attempt's timeout by this much before another worker may retry.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Delivered and given-up events (and their delivery log) are kept this long.
pub const RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Longest wait between claims while the database fails them.
const CLAIM_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the worker prunes them.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Install rustls' `ring` provider as the process default (reqwest is built without a
/// provider of its own; see Cargo.toml). Idempotent.
pub fn install_crypto_provider() {
    // rustls 0.23.48 deprecates the ring provider for lacking post-quantum key exchange;
    // aws-lc-rs has it but needs cmake to build, which voxgate must not require.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    // Err means a provider is already installed: fine.
    let _ = provider.install_default();
}

/// `Voxgate-Signature` of `body` at Unix time `t`: `t=<t>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>" keyed with secret>`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", signature_hex(secret, t, body))
}

fn signature_hex(secret: &str, t: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The wait after the `failures`-th failed attempt (1-based): `base · 2^(failures-1)`,
/// scaled by `jitter` (0.75..=1.25), at most [`MAX_RETRY_DELAY`].
pub fn retry_delay(failures: i64, base: Duration, jitter: f64) -> Duration {
    let exp = u32::try_from(failures.clamp(1, 40) - 1).unwrap_or(0);
    let raw = base.as_secs_f64() * 2f64.powi(i32::try_from(exp).unwrap_or(0));
    let d = (raw * jitter.clamp(0.75, 1.25)).min(MAX_RETRY_DELAY.as_secs_f64());
    Duration::from_secs_f64(d.max(0.0))
}

/// After a failed attempt (the `failures`-th) at `now`: retry at `now + delay`, or give
/// up when that is later than `created_at + retry_for`.
pub fn after_failure(
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
    failures: i64,
    cfg: &DeliveryConfig,
    jitter: f64,
) -> NextStep {
    let delay = retry_delay(failures, cfg.retry_base, jitter);
    let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
    let deadline = created_at + chrono::Duration::from_std(cfg.retry_for).unwrap_or_default();
    if at > deadline {
        NextStep::Failed
    } else {
        NextStep::RetryAt(at)
    }
}

/// What the worker needs from `[webhooks]`, resolved.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_for: Duration,
    /// Signs status_callback deliveries: `webhooks.secret` or the generated one.
    pub callback_secret: String,
}

impl DeliveryConfig {
    pub fn new(cfg: &WebhooksConfig, callback_secret: String) -> DeliveryConfig {
        DeliveryConfig {
            timeout: Duration::from_secs(cfg.timeout_seconds),
            retry_base: Duration::from_millis(cfg.retry_base_ms),
            retry_for: Duration::from_secs(cfg.retry_for_seconds),
            callback_secret,
        }
    }
}

/// Runs until `shutdown` turns true, then waits (at most one timeout) for the deliveries
/// in flight; whatever is cut off is retried by the next start (its lease expires).
pub async fn run(store: Store, cfg: DeliveryConfig, mut shutdown: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        .timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("voxgate/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return;
        }
    };
    let owner = format!("{}-{}", std::process::id(), crate::ids::new_ulid());
    let lease = cfg.timeout + LEASE_MARGIN;
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut next_prune = tokio::time::Instant::now() + Duration::from_secs(60);
    // Consecutive failed claims (the database is down): the wait doubles up to 30 s.
    let mut claim_failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if tokio::time::Instant::now() >= next_prune {
            next_prune += PRUNE_EVERY;
            let before =
                crate::store::now() - chrono::Duration::from_std(RETENTION).unwrap_or_default();
            match store.prune_webhook_events(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "pruned finished webhook events"),
                Err(e) => tracing::warn!(error = %e, "pruning webhook events failed"),
            }
        }
        let free = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
        let mut claimed = 0;
        let mut failed = false;
        if free > 0 {
            match store
                .claim_webhook_events(&owner, crate::store::now(), lease, free)
                .await
            {
                Ok(events) => {
                    if claim_failures > 0 {
                        tracing::info!(failures = claim_failures, "claiming webhook events again");
                    }
                    claim_failures = 0;
                    claimed = events.len();
                    for ev in events {
                        in_flight.spawn(deliver(
                            client.clone(),
                            store.clone(),
                            cfg.clone(),
                            owner.clone(),
                            ev,
                        ));
                    }
                }
                Err(e) => {
                    failed = true;
                    claim_failures = claim_failures.saturating_add(1);
                    tracing::warn!(error = %e, failures = claim_failures, "claiming webhook events failed; retrying");
                }
            }
        }
        if claimed > 0 && in_flight.len() < MAX_IN_FLIGHT {
            continue;
        }
        let wait = if failed {
            POLL.saturating_mul(1 << claim_failures.min(5))
                .min(CLAIM_BACKOFF_MAX)
        } else if claimed > 0 {
            POLL
        } else {
            let now = crate::store::now();
            match store.next_webhook_attempt_at(now).await {
                Ok(Some(t)) => (t - now).to_std().unwrap_or(POLL).min(POLL),
                _ => POLL,
            }
        };
        tokio::select! {
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            () = store.webhooks_notified() => {}
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    let drain = async { while in_flight.join_next().await.is_some() {} };
    if tokio::time::timeout(cfg.timeout, drain).await.is_err() {
        tracing::info!(
            "webhook deliveries cut off by shutdown; they are retried on the next start"
        );
    }
}

/// One attempt: POST, then log it and move the event on.
async fn deliver(
    client: reqwest::Client,
    store: Store,
    cfg: DeliveryConfig,
    owner: String,
    ev: ClaimedEvent,
) {
    let secret = ev.secret.as_deref().unwrap_or(&cfg.callback_secret);
    let t = Utc::now().timestamp();
    let signature = sign(secret, t, ev.payload.as_bytes());
    let started = std::time::Instant::now();
    let sent = client
        .post(&ev.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(EVENT_ID_HEADER, ev.id.as_str())
        .body(ev.payload.clone())
        .send()
        .await;
    let (status_code, error) = match sent {
        Ok(mut resp) => {
            let status = resp.status();
            // Read a short answer through so the connection can be reused; never more
            // than 64 KiB or 1 s of it (the receiver's answer is not ours to buffer).
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let mut read = 0usize;
                while let Ok(Some(chunk)) = resp.chunk().await {
                    read += chunk.len();
                    if read > 64 * 1024 {
                        break;
                    }
                }
            })
            .await;
            if status.is_success() {
                (Some(status.as_u16()), None)
            } else {
                (Some(status.as_u16()), Some(format!("HTTP {status}")))
            }
        }
        Err(e) => (None, Some(describe(&e, cfg.timeout))),
    };
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let now = crate::store::now();
    let next = if error.is_none() {
        NextStep::Delivered
    } else {
        let jitter = rand::rng().random_range(0.75..=1.25);
        after_failure(ev.created_at, now, ev.attempts + 1, &cfg, jitter)
    };
    match next {
        NextStep::Delivered => {
            metrics::counter!("voxgate_webhook_deliveries_total", "result" => "delivered")
                .increment(1);
            tracing::debug!(event = %ev.id, url = %ev.url, status = ?status_code, duration_ms, "webhook delivered");
        }
        NextStep::RetryAt(at) => {
            metrics::counter!("voxgate_webhook_deliveries_total", "result" => "retry").increment(1);
            tracing::debug!(event = %ev.id, url = %ev.url, error = ?error, retry_at = %at, "webhook delivery failed; will retry");
        }
        NextStep::Failed => {
            metrics::counter!("voxgate_webhook_deliveries_total", "result" => "failed")
                .increment(1);
            tracing::warn!(event = %ev.id, url = %ev.url, error = ?error, attempts = ev.attempts + 1, "webhook event given up");
        }
    }
    let result = AttemptResult {
        status_code,
        error,
        duration_ms,
        at: now,
    };
    if let Err(e) = store
        .finish_webhook_attempt(&ev, &owner, &result, next)
        .await
    {
        // The lease expires and the event is sent again: at-least-once.
        tracing::warn!(error = %e, event = %ev.id, "recording a webhook attempt failed");
    }
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timeout after {timeout:?}");
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_t_dot_body() {
        // The construction: HMAC over "<t>.<body>"; the HMAC itself is checked against
        // RFC 4231 below.
        let s = sign("whsec_test", 1_700_000_000, br#"{"a":1}"#);
        let mut mac =
            Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap_or_else(|_| unreachable!());
        mac.update(br#"1700000000.{"a":1}"#);
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(s, format!("t=1700000000,v1={want}"));
        assert_eq!(want.len(), 64);
        assert_ne!(s, sign("whsec_other", 1_700_000_000, br#"{"a":1}"#));
        assert_ne!(s, sign("whsec_test", 1_700_000_001, br#"{"a":1}"#));
    }

    #[test]
    fn rfc4231_case_2() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap_or_else(|_| unreachable!());
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_secs(5);
        assert_eq!(retry_delay(1, base, 1.0), Duration::from_secs(5));
        assert_eq!(retry_delay(2, base, 1.0), Duration::from_secs(10));
        assert_eq!(retry_delay(4, base, 1.0), Duration::from_secs(40));
        assert_eq!(retry_delay(3, base, 0.75), Duration::from_secs(15));
        assert_eq!(retry_delay(3, base, 1.25), Duration::from_secs(25));
        // Jitter outside ±25 % is clamped.
        assert_eq!(retry_delay(1, base, 9.0), Duration::from_millis(6250));
        assert_eq!(retry_delay(30, base, 1.0), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(30, base, 1.25), MAX_RETRY_DELAY);
    }

    #[test]
    fn gives_up_after_retry_for() {
        let cfg = DeliveryConfig {
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(60),
            retry_for: Duration::from_secs(86_400),
            callback_secret: String::new(),
        };
        let created = Utc::now();
        let hour = chrono::Duration::hours(1);
        assert_eq!(
            after_failure(created, created, 1, &cfg, 1.0),
            NextStep::RetryAt(created + chrono::Duration::seconds(60))
        );
        // 23.5 h in: the next try (1 h later, capped) would fall after the 24 h.
        let late = created + hour * 23 + chrono::Duration::minutes(30);
        assert_eq!(
            after_failure(created, late, 20, &cfg, 1.0),
            NextStep::Failed
        );
        let ok = created + hour * 22;
        assert_eq!(
            after_failure(created, ok, 20, &cfg, 1.0),
            NextStep::RetryAt(ok + hour)
        );
    }
}
