//! SIP transport and registrar. STUB: replaced by the SIP engineer's implementation; the
//! interface below is the contract with `app.rs`.

/// What the SIP side gets at start.
pub struct SipStart {
    pub config: std::sync::Arc<crate::config::Config>,
    pub store: crate::store::Store,
    pub events: tokio::sync::broadcast::Sender<crate::events::AppEvent>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// A running SIP side.
pub struct SipHandle {}

impl SipHandle {
    /// Are the listeners up (for `/readyz`)?
    pub fn is_ready(&self) -> bool {
        true
    }

    /// Wait for the SIP side to finish after shutdown was signalled (the registrar
    /// flushes its write-behind queue here).
    pub async fn join(self) {}
}

/// Start listeners and the registrar.
pub async fn start(args: SipStart) -> anyhow::Result<SipHandle> {
    let _ = args;
    Ok(SipHandle {})
}
