//! Commands from the control API to the call engine, answered through a oneshot.

use tokio::sync::{mpsc, oneshot};

use super::engine::Originate;
use super::types::CallId;

/// Why a command could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no live call with that id")]
    NotFound,
    #[error("the call or leg is not in a state that allows this")]
    Conflict,
    #[error("the call engine is not running")]
    Unavailable,
}

#[derive(Debug)]
pub enum CallCommand {
    /// End the call: BYE to answered legs, CANCEL to ringing ones, 487 to an unanswered
    /// caller; recorded with `hangup_by = "api"`.
    Hangup {
        call_id: CallId,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Click-to-call for a call the API has stored (`queued`); its outcome lands in the
    /// call's record.
    Originate(Box<Originate>),
}

/// The API's handle on the engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CallControl {
    tx: mpsc::Sender<CallCommand>,
}

impl CallControl {
    /// A handle and the receiving end the engine polls.
    pub fn channel() -> (CallControl, mpsc::Receiver<CallCommand>) {
        let (tx, rx) = mpsc::channel(1024);
        (CallControl { tx }, rx)
    }

    pub async fn hangup(&self, call_id: &str) -> Result<(), ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(CallCommand::Hangup {
                call_id: CallId::new(call_id),
                reply,
            })
            .await
            .map_err(|_| ControlError::Unavailable)?;
        rx.await.map_err(|_| ControlError::Unavailable)?
    }

    /// Starts a click-to-call; the engine reports everything after through the record.
    pub async fn originate(&self, o: Originate) -> Result<(), ControlError> {
        self.tx
            .send(CallCommand::Originate(Box::new(o)))
            .await
            .map_err(|_| ControlError::Unavailable)
    }
}
