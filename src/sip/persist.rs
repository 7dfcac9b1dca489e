//! Registration persistence as a group commit: the registrar queues changes, this worker
//! applies them in batches (one transaction per batch), and tells the core which barrier
//! the commit covered, so the core can release the REGISTER responses that waited for it.
//! A 200 OK to a REGISTER thus means the binding is on disk (it survives `kill -9`), while
//! thousands of REGISTERs a second still cost only a handful of commits.
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

/// Applies one batch, retrying a failing database a few times. If it stays down, the batch
/// is reported and dropped: the in-memory registrar still routes correctly, and phones
/// write their bindings again at their next refresh.
async fn apply(store: &Store, batch: &[RegistrationChange]) {
    let mut attempt = 0;
    loop {
        match store.apply_registration_changes(batch).await {
            Ok(()) => return,
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "persisting registrations failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, dropped = batch.len(), "giving up persisting registrations");
                metrics::counter!("voxgate_registration_persist_dropped_total")
                    .increment(batch.len() as u64);
                return;
            }
        }
    }
}
