//! Write-behind persistence of registrations: the registrar queues changes, this worker
//! applies them in batches, one transaction per batch, so thousands of REGISTERs a second
//! cost a handful of commits. The queue closes when the core stops; the worker drains it
//! before `SipHandle::join` returns, so a graceful shutdown loses nothing.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::store::{RegistrationChange, Store};

const MAX_BATCH: usize = 512;

pub async fn run(store: Store, mut rx: UnboundedReceiver<RegistrationChange>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        // A failing database must not lose the batch silently: retry a few times, then
        // report what is dropped (the in-memory registrar still routes correctly).
        let mut attempt = 0;
        loop {
            match store.apply_registration_changes(&batch).await {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "persisting registrations failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, dropped = batch.len(), "giving up persisting registrations");
                    metrics::counter!("voxgate_registration_persist_dropped_total")
                        .increment(batch.len() as u64);
                    break;
                }
            }
        }
        metrics::counter!("voxgate_registration_changes_persisted_total")
            .increment(batch.len() as u64);
        batch.clear();
    }
}
