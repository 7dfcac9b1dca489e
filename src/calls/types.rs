//! Names the call engine, the store and the API share (DESIGN.md: one name for one thing):
//! identifier newtypes, so a leg id is never passed where a call id belongs, and the
//! small enums that used to be strings.

use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id read from the store or an API path (not validated here).
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_newtype!(
    /// A call (`call_…`): the unit of the API, the CDR and the webhooks.
    CallId
);
id_newtype!(
    /// One leg of a call (`leg_…`): a channel, i.e. one SIP dialog.
    LegId
);
id_newtype!(
    /// An agent (`agt_…`).
    AgentId
);

/// Who ended a call (SPEC §4 `hangup_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HangupBy {
    /// The party on the leg the call came in on.
    Caller,
    /// The party voxgate dialled.
    Callee,
    /// `POST /v1/calls/{id}/hangup`.
    Api,
    /// voxgate itself: timers, shutdown, errors.
    System,
}

impl HangupBy {
    pub const fn as_str(self) -> &'static str {
        match self {
            HangupBy::Caller => "caller",
            HangupBy::Callee => "callee",
            HangupBy::Api => "api",
            HangupBy::System => "system",
        }
    }
}

/// Where a call came from and went (SPEC §4 `direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallDirection {
    /// Agent to agent.
    Internal,
    /// From a carrier to voxgate (later: trunks).
    Inbound,
    /// From voxgate to a carrier (later: click-to-call, campaigns).
    Outbound,
}

impl CallDirection {
    pub const fn as_str(self) -> &'static str {
        match self {
            CallDirection::Internal => "internal",
            CallDirection::Inbound => "inbound",
            CallDirection::Outbound => "outbound",
        }
    }
}
