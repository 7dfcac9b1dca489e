//! Agent credentials for the registrar, read off the core loop. The core must never await
//! the database (a slow or unreachable one would stall every SIP message), so it hands
//! each agent event to this worker, which runs the query and sends back what to apply.
//!
//! One worker, in order: a change and a later deletion of the same agent reach the
//! registrar in the order they happened, never a stale reload after the deletion.

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::store::{AgentAuth, Store};

/// What the core asks the worker to look up, in event order.
#[derive(Debug)]
pub enum AgentLookup {
    /// An agent was created or changed: reload it by username.
    Changed { username: String },
    /// An agent was deleted (nothing to read; passes through to keep the order).
    Deleted { id: String },
    /// Events were missed: reload every agent.
    All,
}

/// What the core applies to the registrar.
#[derive(Debug)]
pub enum AgentUpdate {
    Upsert(AgentAuth),
    Remove { id: String },
    Replace(Vec<AgentAuth>),
}

/// Runs until the core drops its sender (or stops listening).
pub async fn run(
    store: Store,
    mut lookups: UnboundedReceiver<AgentLookup>,
    updates: UnboundedSender<AgentUpdate>,
) {
    while let Some(lookup) = lookups.recv().await {
        let update = match lookup {
            AgentLookup::Changed { username } => {
                match store.agent_auth_by_username(&username).await {
                    Ok(Some(a)) => AgentUpdate::Upsert(a),
                    // Deleted since: its own event follows.
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, %username, "agent reload failed");
                        continue;
                    }
                }
            }
            AgentLookup::Deleted { id } => AgentUpdate::Remove { id },
            AgentLookup::All => match store.all_agent_auth().await {
                Ok(all) => AgentUpdate::Replace(all),
                Err(e) => {
                    tracing::warn!(error = %e, "agent reload failed");
                    continue;
                }
            },
        };
        if updates.send(update).is_err() {
            return;
        }
    }
}
