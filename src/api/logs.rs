//! `GET /api/modules/<short>/logs`: the module's ring buffer, as a snapshot or a stream.
//!
//! Without `follow`, the answer is one JSON object `{short, lines:[{seq,text}], missed,
//! nextSeq}`; a poller passes `?since=<nextSeq>` next time and learns from `missed` how
//! many lines it lost to eviction.
//!
//! With `follow=1` the body is NDJSON (`application/x-ndjson`), one event per line:
//! `{"seq":N,"text":"…"}` for an output line, `{"missed":N}` for a gap. It starts with
//! the buffered lines at or after `since`, then pushes new lines as the supervisor
//! publishes them (no polling; upstream R10 went silent once the buffer was full). NDJSON
//! rather than plain text so every line keeps its sequence number and a reconnecting
//! client resumes exactly where it stopped. The stream lasts across crashes and restarts
//! of the module and ends when the hub shuts down.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;

use super::wire::{FollowEvent, Line, LogsReply};
use super::{ApiError, Phase, Shared, auth, json, short_of};
use crate::supervisor::LogEvent;

/// The query string.
#[derive(Debug, Deserialize)]
pub(super) struct LogsQuery {
    since: Option<u64>,
    follow: Option<String>,
}

pub(super) async fn logs(
    State(s): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<LogsQuery>, QueryRejection>,
    _op: auth::Operator,
) -> Result<Response, ApiError> {
    let short = short_of(path)?;
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!("the query is malformed ({e}); use ?since=<sequence number>&follow=1."))
    })?;
    let follow = match q.follow.as_deref() {
        None | Some("0" | "false" | "no") => false,
        Some("" | "1" | "true" | "yes") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "follow={other:?} is not a boolean; use follow=1 or follow=0."
            )));
        }
    };
    if !follow {
        let snap = s.supervisor.logs(&short, q.since).ok_or_else(|| ApiError::not_supervised(&short))?;
        return Ok(json(LogsReply {
            short,
            lines: snap.lines.into_iter().map(|l| line(l.seq, l.text)).collect(),
            missed: snap.missed,
            next_seq: snap.next_seq,
        }));
    }
    let follower = s.supervisor.follow(&short, q.since).ok_or_else(|| ApiError::not_supervised(&short))?;
    let phase = s.phase.clone();
    let stream = futures_util::stream::unfold((follower, phase), |(mut follower, mut phase)| async move {
        if phase.borrow().ends_streams() {
            return None;
        }
        let event = tokio::select! {
            ev = follower.next() => ev?,
            // Closing (or the hub dropping its sender) ends the stream, so graceful HTTP
            // shutdown is not held up by followers.
            _ = phase.wait_for(Phase::ends_streams) => return None,
        };
        let wire = match event {
            LogEvent::Line(l) => FollowEvent::Line(line(l.seq, l.text)),
            LogEvent::Gap { missed } => FollowEvent::Gap { missed },
        };
        let mut bytes = serde_json::to_vec(&wire).expect("a follow event always serializes");
        bytes.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(bytes)), (follower, phase)))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// A wire line: the supervisor's text (`[short] …` or `[supervisor] …`) without its newline.
fn line(seq: u64, mut text: String) -> Line {
    if text.ends_with('\n') {
        text.pop();
    }
    Line { seq, text }
}
