//! Registration persistence as a group commit: the registrar queues changes, this worker
//! applies them in batches (one transaction per batch), and tells the core which barrier
//! the commit covered, so the core can release the REGISTER responses that waited for it.
//! A 200 OK to a REGISTER thus means the binding is on disk (it survives `kill -9`), while
//! thousands of REGISTERs a second still cost only a handful of commits. The barrier is
//! released only after a successful commit: while the database is down the 200s wait.
//!
//! The queue closes when the core stops; the worker drains it before `SipHandle::join`
//! returns, so a graceful shutdown loses nothing.

use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::store::{RegistrationChange, Store};

const MAX_BATCH: usize = 512;

/// What the registrar and the core queue for the store, in order.
#[derive(Debug)]
pub enum PersistOp {
    Change(RegistrationChange),
    /// Everything queued before this is committed once `committed` reports this number.
    Barrier(u64),
}

pub async fn run(
    store: Store,
    mut rx: UnboundedReceiver<PersistOp>,
    committed: UnboundedSender<u64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let mut barrier = None;
        let mut op = Some(first);
        while let Some(next) = op.take() {
            match next {
                PersistOp::Change(c) => batch.push(c),
                PersistOp::Barrier(n) => barrier = Some(n),
            }
            if batch.len() < MAX_BATCH {
                op = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            apply(&store, &batch).await;
            metrics::counter!("voxgate_registration_changes_persisted_total")
                .increment(batch.len() as u64);
            batch.clear();
        }
        if let Some(n) = barrier {
            // The core may be gone during shutdown; nothing left to release then.
            let _ = committed.send(n);
        }
    }
}

/// First wait after a commit failed for a connection-level reason; doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts while the database is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Applies one batch; returns once it is committed, so the barrier after it is only
/// released for bindings that are on disk. A database that cannot be reached is retried
/// forever with capped backoff: the held 200s wait, the phones retransmit their REGISTERs
/// and the transaction layer absorbs the retransmissions. A batch the database *rejects*
/// (a constraint violation, which no retry can fix) is applied change by change, and only
/// the rejected change is skipped (logged, counted in
/// `voxgate_registration_persist_dropped_total`).
async fn apply(store: &Store, batch: &[RegistrationChange]) {
    let mut backoff = FIRST_BACKOFF;
    let mut failures: u32 = 0;
    loop {
        match store.apply_registration_changes(batch).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "persisting registrations again");
                    metrics::gauge!("voxgate_registration_persist_db_down").set(0.0);
                }
                return;
            }
            Err(e) if e.is_rejected() => {
                if failures > 0 {
                    metrics::gauge!("voxgate_registration_persist_db_down").set(0.0);
                }
                if batch.len() == 1 {
                    tracing::error!(error = %e, change = ?batch[0], "registration change rejected; skipped");
                    metrics::counter!("voxgate_registration_persist_dropped_total").increment(1);
                    return;
                }
                tracing::warn!(error = %e, changes = batch.len(), "registration batch rejected; applying one by one");
                for change in batch {
                    Box::pin(apply(store, std::slice::from_ref(change))).await;
                }
                return;
            }
            Err(e) => {
                failures += 1;
                metrics::gauge!("voxgate_registration_persist_db_down").set(1.0);
                tracing::warn!(
                    error = %e,
                    failures,
                    changes = batch.len(),
                    retry_in = ?backoff,
                    "persisting registrations failed; retrying (their 200s wait)"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
