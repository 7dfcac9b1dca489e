//! The `simulated` carrier: a SIP endpoint inside voxgate, on a loopback UDP port, that
//! takes the calls of `simulated` trunks and plays out each number's rule (answer after
//! N seconds and send a tone, busy, no answer, fail), so that operators can try their
//! flows — click-to-call, webhooks, CDRs — without a carrier.
//!
//! The engine treats it as any other carrier (its INVITEs, pacing, CANCELs and BYEs take
//! the same path as a real trunk's), so what works here works against a carrier. It
//! answers like a plain UAS on a lossless loopback: no retransmissions of its own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use voxgate_media::tone::{Law, TonePlayer, ToneSpec, PACKET_LEN};
use voxgate_sip::message::{HeaderName, Message, MessageBuilder, Method, SipUri};
use voxgate_sip::sdp::SessionDescription;

/// What a simulated number does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Rings for `after`, answers, and sends a tone until hung up (or for `talk`, then
    /// hangs up itself).
    Answer {
        after: Duration,
        talk: Option<Duration>,
    },
    /// Rings for `after`, then 486 Busy Here.
    Busy { after: Duration },
    /// Rings until cancelled.
    NoAnswer,
    /// Rings for `after`, then 503 Service Unavailable.
    Fail { after: Duration },
    /// 404 Not Found at once: a number the carrier does not serve.
    NotFound,
}

/// Which outcome a call gets: asked with the trunk (the Request-URI's `trunk`
/// parameter) and the dialled number (its user part).
pub type Rules = Arc<dyn Fn(&str, &str) -> Outcome + Send + Sync>;

/// A running simulated carrier.
pub struct SimulatedCarrier {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

impl SimulatedCarrier {
    /// Binds a UDP port on `ip` and serves it until the task is aborted.
    pub async fn start(ip: IpAddr, rules: Rules) -> std::io::Result<SimulatedCarrier> {
        let socket = Arc::new(UdpSocket::bind(SocketAddr::new(ip, 0)).await?);
        let addr = socket.local_addr()?;
        let task = tokio::spawn(serve(socket, rules));
        Ok(SimulatedCarrier { addr, task })
    }
}

/// One call in progress.
struct SimCall {
    invite: Message,
    peer: SocketAddr,
    to_tag: String,
    /// The pending outcome or the tone, aborted when the call ends.
    task: Option<JoinHandle<()>>,
    answered: bool,
}

/// What a call's timer task asks the loop to do.
enum Step {
    Respond { call_id: String, code: u16 },
    Bye { call_id: String },
}

async fn serve(socket: Arc<UdpSocket>, rules: Rules) {
    let mut calls: HashMap<String, SimCall> = HashMap::new();
    let (steps_tx, mut steps) = mpsc::unbounded_channel::<Step>();
    let mut buf = vec![0u8; 65_536];
    let mut cseq = 1000u32;
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let Some(data) = buf.get(..n) else { continue };
                let Ok(msg) = Message::parse(Bytes::copy_from_slice(data)) else {
                    continue;
                };
                if msg.method().is_some() {
                    on_request(&socket, &rules, &mut calls, &steps_tx, msg, from).await;
                }
            }
            Some(step) = steps.recv() => match step {
                Step::Respond { call_id, code } => {
                    let Some(call) = calls.get_mut(&call_id) else { continue };
                    if code == 200 {
                        let (sdp, task) = match answer_media(&call.invite).await {
                            Some(x) => x,
                            None => {
                                respond(&socket, call, 488, None).await;
                                calls.remove(&call_id);
                                continue;
                            }
                        };
                        call.answered = true;
                        if let Some(old) = call.task.replace(task) {
                            // The talk timer (if any) was spawned with the outcome.
                            drop(old);
                        }
                        respond(&socket, call, 200, Some(sdp)).await;
                    } else {
                        respond(&socket, call, code, None).await;
                        if code >= 300 {
                            // Kept until the ACK (or forgotten with the next outcome).
                            if let Some(t) = call.task.take() {
                                t.abort();
                            }
                        }
                    }
                }
                Step::Bye { call_id } => {
                    let Some(call) = calls.remove(&call_id) else { continue };
                    cseq += 1;
                    send_bye(&socket, &call, cseq).await;
                    if let Some(t) = call.task {
                        t.abort();
                    }
                }
            }
        }
    }
}

async fn on_request(
    socket: &UdpSocket,
    rules: &Rules,
    calls: &mut HashMap<String, SimCall>,
    steps: &mpsc::UnboundedSender<Step>,
    msg: Message,
    from: SocketAddr,
) {
    let call_id = msg.call_id().to_owned();
    match msg.method() {
        Some(Method::Invite) => {
            if let Some(call) = calls.get(&call_id) {
                // A retransmission (or a re-INVITE, which the simulator does not support).
                if msg.to().tag().is_some() {
                    let _ = socket.send_to(&plain(&msg, 488, &call.to_tag), from).await;
                }
                return;
            }
            let uri = msg.request_uri().unwrap_or_default().to_owned();
            let (trunk, number) = match SipUri::parse(&uri) {
                Ok(u) => (
                    uri_param(u.params, "trunk").unwrap_or_default().to_owned(),
                    u.user.unwrap_or_default().to_owned(),
                ),
                Err(_) => (String::new(), String::new()),
            };
            let outcome = rules(&trunk, &number);
            tracing::debug!(%trunk, %number, ?outcome, "simulated carrier call");
            let to_tag = hex::encode(rand::random::<[u8; 6]>());
            let _ = socket.send_to(&plain(&msg, 100, ""), from).await;
            let mut call = SimCall {
                invite: msg,
                peer: from,
                to_tag,
                task: None,
                answered: false,
            };
            if outcome != Outcome::NotFound {
                respond(socket, &call, 180, None).await;
            }
            let steps = steps.clone();
            let id = call_id.clone();
            call.task = Some(tokio::spawn(async move {
                let (after, code) = match outcome {
                    Outcome::Answer { after, .. } => (after, 200),
                    Outcome::Busy { after } => (after, 486),
                    Outcome::Fail { after } => (after, 503),
                    Outcome::NotFound => (Duration::ZERO, 404),
                    Outcome::NoAnswer => return,
                };
                tokio::time::sleep(after).await;
                let _ = steps.send(Step::Respond {
                    call_id: id.clone(),
                    code,
                });
                if let Outcome::Answer {
                    talk: Some(talk), ..
                } = outcome
                {
                    tokio::time::sleep(talk).await;
                    let _ = steps.send(Step::Bye { call_id: id });
                }
            }));
            calls.insert(call_id, call);
        }
        Some(Method::Cancel) => {
            let _ = socket.send_to(&plain(&msg, 200, ""), from).await;
            if let Some(call) = calls.get_mut(&call_id) {
                if !call.answered {
                    respond(socket, call, 487, None).await;
                    if let Some(t) = call.task.take() {
                        t.abort();
                    }
                }
            }
        }
        Some(Method::Ack) => {
            if let Some(call) = calls.get(&call_id) {
                if !call.answered {
                    calls.remove(&call_id);
                }
            }
        }
        Some(Method::Bye) => {
            let tag = calls.remove(&call_id).map(|c| {
                if let Some(t) = c.task {
                    t.abort();
                }
                c.to_tag
            });
            let code = if tag.is_some() { 200 } else { 481 };
            let _ = socket
                .send_to(&plain(&msg, code, tag.as_deref().unwrap_or("")), from)
                .await;
        }
        Some(Method::Options) | Some(Method::Info) | Some(Method::Update) => {
            let _ = socket.send_to(&plain(&msg, 200, ""), from).await;
        }
        _ => {
            let _ = socket.send_to(&plain(&msg, 501, ""), from).await;
        }
    }
}

/// Sends a response to the call's INVITE.
async fn respond(socket: &UdpSocket, call: &SimCall, code: u16, sdp: Option<String>) {
    let local = socket
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut b = MessageBuilder::response_to(&call.invite, code, reason(code), Some(&call.to_tag))
        .header("Contact", &format!("<sip:sim@{local}>"))
        .header("Server", "voxgate-simulated-carrier");
    b = match sdp {
        Some(sdp) => b.body("application/sdp", sdp.as_bytes()),
        None => b.header("Content-Length", "0"),
    };
    let _ = socket.send_to(&b.build(), call.peer).await;
}

/// A response with no body, `to_tag` added when not empty.
fn plain(req: &Message, code: u16, to_tag: &str) -> Bytes {
    let tag = (!to_tag.is_empty()).then_some(to_tag);
    MessageBuilder::response_to(req, code, reason(code), tag)
        .header("Content-Length", "0")
        .build()
}

async fn send_bye(socket: &UdpSocket, call: &SimCall, cseq: u32) {
    let local = socket
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let invite = &call.invite;
    let target = invite
        .contacts()
        .ok()
        .flatten()
        .and_then(|c| c.as_slice().first().map(|c| c.uri.to_owned()))
        .unwrap_or_else(|| format!("sip:{}", call.peer));
    let to = format!(
        "{};tag={}",
        invite.header(HeaderName::To).unwrap_or_default(),
        call.to_tag
    );
    let branch = format!("z9hG4bK{}", hex::encode(rand::random::<[u8; 8]>()));
    let bye = MessageBuilder::request(&Method::Bye, &target)
        .header("Via", &format!("SIP/2.0/UDP {local};branch={branch};rport"))
        .header("Max-Forwards", "70")
        .header("From", &to)
        .header("To", invite.header(HeaderName::From).unwrap_or_default())
        .header("Call-ID", invite.call_id())
        .header("CSeq", &format!("{cseq} BYE"))
        .header("Content-Length", "0")
        .build();
    let _ = socket.send_to(&bye, call.peer).await;
}

/// Answers the offer with G.711 (μ-law if offered, else A-law) and starts the tone
/// towards the offer's address; None if the offer has no G.711.
async fn answer_media(invite: &Message) -> Option<(String, JoinHandle<()>)> {
    let offer = SessionDescription::parse(invite.body()).ok()?;
    let media = offer.media.first()?;
    let remote_ip = offer.connection_for(media)?.ip_addr()?;
    let remote = SocketAddr::new(remote_ip, media.port);
    let pt: u8 = if media.formats.iter().any(|f| f == "0") {
        0
    } else if media.formats.iter().any(|f| f == "8") {
        8
    } else {
        return None;
    };
    let local_ip = match remote_ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    };
    let rtp = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await.ok()?;
    let port = rtp.local_addr().ok()?.port();
    let family = if local_ip.is_ipv4() { "IP4" } else { "IP6" };
    let name = if pt == 0 { "PCMU" } else { "PCMA" };
    let sdp = format!(
        "v=0\r\no=sim 1 1 IN {family} {local_ip}\r\ns=-\r\nc=IN {family} {local_ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    );
    let task = tokio::spawn(tone(rtp, remote, pt));
    Some((sdp, task))
}

/// Sends a continuous tone, one 20 ms packet at a time, reading (and dropping) what
/// arrives so the socket's buffer never fills.
async fn tone(rtp: UdpSocket, to: SocketAddr, pt: u8) {
    let law = if pt == 0 { Law::Ulaw } else { Law::Alaw };
    let mut player = TonePlayer::new(ToneSpec::TEST, law, pt, rand::random());
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut pkt = [0u8; PACKET_LEN];
    let mut sink = [0u8; 2048];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let len = player.next_packet(&mut pkt);
                let _ = rtp.send_to(&pkt[..len], to).await;
            }
            _ = rtp.recv_from(&mut sink) => {}
        }
    }
}

fn uri_param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        404 => "Not Found",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn trunk_and_number_come_from_the_request_uri() {
        let u = SipUri::parse("sip:+14155550100@127.0.0.1:5099;trunk=trk_1;lr").unwrap();
        assert_eq!(uri_param(u.params, "trunk"), Some("trk_1"));
        assert_eq!(u.user, Some("+14155550100"));
    }
}
