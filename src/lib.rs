//! voxgate: a self-hosted SIP/RTP softswitch. This crate is the application: config,
//! store, control API, SIP runtime; `main.rs` only calls [`cli::run`].

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod calls;
pub mod cli;
pub mod config;
pub mod events;
pub mod ids;
pub mod logging;
pub mod media;
pub mod registrar;
pub mod sip;
pub mod store;
pub mod trunks;
pub mod webhooks;
