//! Many dialogs, found by the message that names them (§12.2.2, §12.2.1.2), and the forks
//! of one outgoing INVITE (§12.1.2, §13.2.2.4).

use std::collections::HashMap;

use crate::message::{Message, Method};

use super::{Dialog, DialogError, DialogId, DialogState, ResponseOutcome, TerminationReason};

/// What a response to our initial INVITE did, from [`Dialogs::handle_uac_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UacInviteOutcome {
    /// A 100, or a 1xx without To tag: no dialog (§12.1).
    NoDialog,
    /// A 1xx for the early dialog `id`; `created` for the first one with this To tag (a
    /// new fork, §12.1.2).
    Early { id: DialogId, created: bool },
    /// The first 2xx: dialog `id` is confirmed. ACK it. Other early forks stay until the
    /// INVITE transaction ends ([`Dialogs::end_early_forks`]).
    Confirmed { id: DialogId },
    /// A 2xx from another fork after one was already confirmed (§13.2.2.4): a new
    /// confirmed dialog that the TU must ACK and, wanting one call, BYE.
    ExtraFork { id: DialogId },
    /// A 2xx for a dialog that has had one: a retransmission. Send the same ACK again
    /// ([`AckCache`](super::AckCache)).
    Retransmitted2xx { id: DialogId },
    /// A 3xx-6xx final: the INVITE failed and these early dialogs ended.
    Failed { status: u16, ended: Vec<DialogId> },
}

/// Dialogs keyed by Call-ID, then by both tags. One Call-ID usually holds one dialog, a
/// forked INVITE a few, so lookups hash the Call-ID (no allocation) and scan a short list.
#[derive(Debug, Default)]
pub struct Dialogs {
    by_call_id: HashMap<String, Vec<Dialog>>,
    len: usize,
}

impl Dialogs {
    pub fn new() -> Dialogs {
        Dialogs::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a dialog; refuses a second one with the same id.
    pub fn insert(&mut self, dialog: Dialog) -> Result<&mut Dialog, DialogError> {
        let list = self
            .by_call_id
            .entry(dialog.id().call_id.clone())
            .or_default();
        if list.iter().any(|d| d.id() == dialog.id()) {
            return Err(DialogError::Duplicate);
        }
        list.push(dialog);
        self.len += 1;
        let last = list.len() - 1;
        list.get_mut(last).ok_or(DialogError::Duplicate)
    }

    pub fn get(&self, id: &DialogId) -> Option<&Dialog> {
        self.find(&id.call_id, &id.local_tag, &id.remote_tag)
    }

    pub fn get_mut(&mut self, id: &DialogId) -> Option<&mut Dialog> {
        self.find_mut(&id.call_id, &id.local_tag, &id.remote_tag)
    }

    pub fn remove(&mut self, id: &DialogId) -> Option<Dialog> {
        let list = self.by_call_id.get_mut(&id.call_id)?;
        let pos = list.iter().position(|d| d.id() == id)?;
        let d = list.swap_remove(pos);
        if list.is_empty() {
            self.by_call_id.remove(&id.call_id);
        }
        self.len -= 1;
        Some(d)
    }

    /// Drops every terminated dialog, returning their ids.
    pub fn remove_terminated(&mut self) -> Vec<DialogId> {
        let mut gone = Vec::new();
        self.by_call_id.retain(|_, list| {
            list.retain(|d| {
                let keep = !d.state().is_terminated();
                if !keep {
                    gone.push(d.id().clone());
                }
                keep
            });
            !list.is_empty()
        });
        self.len -= gone.len();
        gone
    }

    pub fn iter(&self) -> impl Iterator<Item = &Dialog> {
        self.by_call_id.values().flatten()
    }

    /// The dialog an incoming request belongs to (§12.2.2): Call-ID, To tag (ours), From
    /// tag (theirs). `None` for a request without To tag (out of dialog) or an unknown
    /// dialog (answer 481, except for ACK which is dropped).
    pub fn find_for_request(&mut self, req: &Message) -> Option<&mut Dialog> {
        let local = req.to().tag()?;
        let remote = req.from().tag().unwrap_or("");
        self.find_mut(req.call_id(), local, remote)
    }

    /// The dialog a response to our request belongs to: Call-ID, From tag (ours), To tag
    /// (theirs).
    pub fn find_for_response(&mut self, resp: &Message) -> Option<&mut Dialog> {
        let local = resp.from().tag()?;
        let remote = resp.to().tag().unwrap_or("");
        self.find_mut(resp.call_id(), local, remote)
    }

    /// The dialogs created by one INVITE of ours (same Call-ID and local tag): its forks.
    pub fn forks<'a>(
        &'a self,
        call_id: &str,
        local_tag: &'a str,
    ) -> impl Iterator<Item = &'a Dialog> + 'a {
        self.by_call_id
            .get(call_id)
            .into_iter()
            .flatten()
            .filter(move |d| d.id().local_tag == local_tag)
    }

    fn find(&self, call_id: &str, local: &str, remote: &str) -> Option<&Dialog> {
        self.by_call_id
            .get(call_id)?
            .iter()
            .find(|d| d.id().local_tag == local && d.id().remote_tag == remote)
    }

    fn find_mut(&mut self, call_id: &str, local: &str, remote: &str) -> Option<&mut Dialog> {
        self.by_call_id
            .get_mut(call_id)?
            .iter_mut()
            .find(|d| d.id().local_tag == local && d.id().remote_tag == remote)
    }

    /// Routes a response to our initial INVITE `invite` (as sent) to its fork, creating
    /// early and confirmed dialogs per To tag (§12.1.2, §13.2.2.4). Responses to
    /// re-INVITEs go to [`Dialog::handle_response`] instead.
    pub fn handle_uac_response(
        &mut self,
        invite: &Message,
        resp: &Message,
    ) -> Result<UacInviteOutcome, DialogError> {
        if invite.method() != Some(&Method::Invite) {
            return Err(DialogError::NotInvite(
                invite.method().cloned().ok_or(DialogError::NotARequest)?,
            ));
        }
        let status = resp.status().ok_or(DialogError::NotAResponse)?;
        let local_tag = invite.from().tag().ok_or(DialogError::MissingTag("From"))?;
        if resp.call_id() != invite.call_id()
            || resp.from().tag() != Some(local_tag)
            || resp.cseq() != invite.cseq()
        {
            return Err(DialogError::Mismatch);
        }
        let call_id = invite.call_id();
        if status >= 300 {
            // The INVITE failed: every fork still early ends (§12.3). A confirmed fork
            // cannot be undone by a late non-2xx.
            let mut ended = Vec::new();
            for d in self.by_call_id.get_mut(call_id).into_iter().flatten() {
                if d.id().local_tag == local_tag && d.state().is_early() {
                    d.terminate(TerminationReason::Rejected { status });
                    ended.push(d.id().clone());
                }
            }
            return Ok(UacInviteOutcome::Failed { status, ended });
        }
        let remote_tag = match resp.to().tag() {
            Some(t) => t,
            None if status >= 200 => "",
            None => return Ok(UacInviteOutcome::NoDialog),
        };
        if status == 100 {
            return Ok(UacInviteOutcome::NoDialog);
        }
        let already_confirmed = self
            .forks(call_id, local_tag)
            .any(|d| d.id().remote_tag != remote_tag && d.was_confirmed());
        if let Some(d) = self.find_mut(call_id, local_tag, remote_tag) {
            let id = d.id().clone();
            let was_early = d.state().is_early();
            return Ok(match d.handle_response(resp)? {
                ResponseOutcome::Confirmed if already_confirmed => {
                    UacInviteOutcome::ExtraFork { id }
                }
                ResponseOutcome::Confirmed => UacInviteOutcome::Confirmed { id },
                ResponseOutcome::Retransmitted2xx => UacInviteOutcome::Retransmitted2xx { id },
                _ if was_early && status < 200 => UacInviteOutcome::Early { id, created: false },
                // A 1xx after the 2xx (reordered) or for an ended fork: nothing to do.
                _ => UacInviteOutcome::NoDialog,
            });
        }
        let dialog = Dialog::new_uac(invite, resp)?;
        let id = dialog.id().clone();
        let confirmed = *dialog.state() == DialogState::Confirmed;
        self.insert(dialog)?;
        Ok(match (confirmed, already_confirmed) {
            (false, _) => UacInviteOutcome::Early { id, created: true },
            (true, false) => UacInviteOutcome::Confirmed { id },
            (true, true) => UacInviteOutcome::ExtraFork { id },
        })
    }

    /// The INVITE transaction of `call_id`/`local_tag` is over (after the 2xx, 64*T1 per
    /// §13.2.2.4; the transaction layer's `Terminated`): forks still early will never
    /// answer and end. Returns their ids.
    pub fn end_early_forks(&mut self, call_id: &str, local_tag: &str) -> Vec<DialogId> {
        let mut ended = Vec::new();
        for d in self.by_call_id.get_mut(call_id).into_iter().flatten() {
            if d.id().local_tag == local_tag && d.state().is_early() {
                d.terminate(TerminationReason::Local);
                ended.push(d.id().clone());
            }
        }
        ended
    }
}
