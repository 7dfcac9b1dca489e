//! Commands from the control API to the call engine, answered through a oneshot.

use tokio::sync::{mpsc, oneshot};

use super::engine::Originate;
use super::types::{CallId, LegId};
use crate::media::{Digit, Loops};
use crate::store::PromptRow;
use crate::store::RecordingChannels;

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
    /// Play a prompt to one leg or both; answered with the legs it plays to.
    Play {
        call_id: CallId,
        leg: Option<LegId>,
        play: Box<PlayPrompt>,
        reply: oneshot::Sender<Result<Vec<LegId>, ControlError>>,
    },
    /// Send digits to a leg (the lead's when absent); answered with the leg.
    Dtmf {
        call_id: CallId,
        leg: Option<LegId>,
        digits: Vec<Digit>,
        reply: oneshot::Sender<Result<LegId, ControlError>>,
    },
    /// Start, pause, resume or stop the call's recording; answered with its id.
    Recording {
        call_id: CallId,
        action: RecordingAction,
        reply: oneshot::Sender<Result<String, ControlError>>,
    },
}

/// What `POST /v1/calls/{id}/play` plays.
#[derive(Debug, Clone)]
pub struct PlayPrompt {
    pub prompt: PromptRow,
    pub loops: Loops,
}

/// `POST /v1/calls/{id}/recording`'s `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingAction {
    Start(RecordingChannels),
    Pause,
    Resume,
    Stop,
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

    /// Plays a prompt into the call; the legs it plays to.
    pub async fn play(
        &self,
        call_id: &str,
        leg: Option<&str>,
        play: PlayPrompt,
    ) -> Result<Vec<LegId>, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(CallCommand::Play {
                call_id: CallId::new(call_id),
                leg: leg.map(LegId::new),
                play: Box::new(play),
                reply,
            })
            .await
            .map_err(|_| ControlError::Unavailable)?;
        rx.await.map_err(|_| ControlError::Unavailable)?
    }

    /// Sends digits into the call; the leg they go to.
    pub async fn dtmf(
        &self,
        call_id: &str,
        leg: Option<&str>,
        digits: Vec<Digit>,
    ) -> Result<LegId, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(CallCommand::Dtmf {
                call_id: CallId::new(call_id),
                leg: leg.map(LegId::new),
                digits,
                reply,
            })
            .await
            .map_err(|_| ControlError::Unavailable)?;
        rx.await.map_err(|_| ControlError::Unavailable)?
    }

    /// Acts on the call's recording; the recording's id.
    pub async fn recording(
        &self,
        call_id: &str,
        action: RecordingAction,
    ) -> Result<String, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(CallCommand::Recording {
                call_id: CallId::new(call_id),
                action,
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
