//! In-process application events, published on a `tokio::sync::broadcast` channel after
//! the database commit they describe, so caches (the registrar's agent credentials) can
//! refresh. Receivers that lag simply reload everything.

/// Capacity of the application event channel.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppEvent {
    /// An agent was created or changed (credentials, limits, presence).
    AgentChanged { id: String, username: String },
    /// An agent was deleted; its registrations are gone with it.
    AgentDeleted { id: String, username: String },
    /// Trunks or numbers changed (created, updated, deleted); the API has already
    /// reloaded the shared [`crate::trunks::TrunkDirectory`].
    TrunksChanged,
}
