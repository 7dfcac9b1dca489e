//! The HTTP side of call programs: a `redirect` (and a number routed to a `webhook`)
//! POSTs the call and its variables to the operator's app, whose JSON reply is the list of
//! verbs that runs next (the model jambonz apps use).
//!
//! The engine never waits on the network: it asks with [`ProgramRequest`] (an engine
//! output), a tokio task sends it, and the [`ProgramReply`] comes back on a channel to the
//! SIP core, which hands it to the engine. Requests are signed like every webhook voxgate
//! sends (`Voxgate-Signature`, SPEC §5, with the status_callback secret), bounded in time
//! ([`TIMEOUT`]) and in reply size ([`MAX_REPLY`]); redirects are not followed.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use voxgate_ivr::{HttpError, RequestId};

use super::types::CallId;

/// How long the operator's app has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest reply read (the program refuses a larger one with its own limit).
pub const MAX_REPLY: usize = 256 * 1024;

/// A request a call program makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramRequest {
    pub call: CallId,
    pub request: RequestId,
    pub url: String,
    /// The JSON body: the call's fields and the program's variables.
    pub body: serde_json::Value,
}

/// What came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramReply {
    pub call: CallId,
    pub request: RequestId,
    /// A 2xx reply's body, or why there is none.
    pub result: Result<Vec<u8>, HttpError>,
}

/// Sends programs' requests and posts the replies to the SIP core.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    secret: String,
    replies: UnboundedSender<ProgramReply>,
}

impl Fetcher {
    /// A fetcher signing with `secret` and answering on `replies`.
    pub fn new(secret: String, replies: UnboundedSender<ProgramReply>) -> anyhow::Result<Fetcher> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("voxgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Fetcher {
            client,
            secret,
            replies,
        })
    }

    /// Sends `req` on the runtime; its reply follows on the channel (always one).
    pub fn spawn(&self, req: ProgramRequest) {
        let this = self.clone();
        tokio::spawn(async move {
            let result = this.send(&req).await;
            if let Err(e) = &result {
                tracing::info!(call = %req.call, url = %req.url, error = %e, "program request failed");
            }
            let _ = this.replies.send(ProgramReply {
                call: req.call,
                request: req.request,
                result,
            });
        });
    }

    async fn send(&self, req: &ProgramRequest) -> Result<Vec<u8>, HttpError> {
        let body = serde_json::to_vec(&req.body).map_err(|_| HttpError::Unreachable)?;
        let t = chrono::Utc::now().timestamp();
        let signature = crate::webhooks::sign(&self.secret, t, &body);
        let response = self
            .client
            .post(&req.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Voxgate-Signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    HttpError::Timeout
                } else {
                    HttpError::Unreachable
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(HttpError::Status(status.as_u16()));
        }
        let mut reply = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            if e.is_timeout() {
                HttpError::Timeout
            } else {
                HttpError::Unreachable
            }
        })? {
            reply.extend_from_slice(&chunk);
            if reply.len() > MAX_REPLY {
                // The program reports "too large" from what it is given.
                break;
            }
        }
        Ok(reply)
    }
}
