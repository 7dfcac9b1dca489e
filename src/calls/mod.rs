//! The call engine (B2BUA, SPEC §2-§3): every call owns an inbound leg and one or more
//! outbound legs, each its own SIP dialog, joined only here. It runs inside the SIP core
//! task (it drives the same transaction layer) and talks to the rest of the application
//! through [`control`] (commands from the API) and [`record`] (call records for the store).

pub mod control;
pub mod engine;
pub mod record;
