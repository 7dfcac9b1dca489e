//! RFC 3261 §17 transactions as sans-IO state machines driven by `now`.
