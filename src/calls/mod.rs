//! The call engine (B2BUA, SPEC §2-§3): calls made of channels (one SIP dialog each),
//! dials and bridges, joined only here ([`engine`], sans-IO). It runs inside the SIP core
//! task (it drives the same transaction layer) and talks to the rest of the application
//! through [`env`] (routing, media), [`control`] (commands from the API) and [`record`]
//! (call records for the store).

pub mod control;
pub mod engine;
pub mod env;
pub mod fetch;
pub mod pacer;
pub mod record;
#[cfg(test)]
mod tests;
pub mod types;
