//! The request body of a proxied call: streamed, at most [`MAX_BODY`]; a body of at most
//! [`RETRY_COPY`] is kept whole so that the call can be made again after a `401`. Nothing
//! larger is ever held in memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, BodyDataStream, Bytes};
use futures::StreamExt;

/// The largest request body passed on.
pub const MAX_BODY: u64 = 10 * 1024 * 1024;

/// The largest request body kept for a retry after a `401`.
pub const RETRY_COPY: usize = 1024 * 1024;

/// Why a request body could not be passed on.
#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Unreadable,
}

pub enum OutgoingBody {
    /// The whole body, small enough to be sent twice.
    Kept(Bytes),
    /// The part read so far and the rest still coming: sent once.
    Streamed {
        head: Bytes,
        rest: BodyDataStream,
        over_limit: Arc<AtomicBool>,
    },
}

impl OutgoingBody {
    /// Reads up to `RETRY_COPY` bytes of `body`: all of it when it is no larger.
    pub async fn read(body: Body) -> Result<Self, BodyError> {
        let mut rest = body.into_data_stream();
        let mut head: Vec<u8> = Vec::new();
        loop {
            match rest.next().await {
                None => return Ok(OutgoingBody::Kept(Bytes::from(head))),
                Some(Err(_)) => return Err(BodyError::Unreadable),
                Some(Ok(chunk)) => {
                    head.extend_from_slice(&chunk);
                    if head.len() > RETRY_COPY {
                        if head.len() as u64 > MAX_BODY {
                            return Err(BodyError::TooLarge);
                        }
                        return Ok(OutgoingBody::Streamed {
                            head: Bytes::from(head),
                            rest,
                            over_limit: Arc::new(AtomicBool::new(false)),
                        });
                    }
                }
            }
        }
    }

    /// Whether the call can be made again with the same body.
    pub fn kept(&self) -> Option<&Bytes> {
        match self {
            OutgoingBody::Kept(bytes) => Some(bytes),
            OutgoingBody::Streamed { .. } => None,
        }
    }

    /// Whether a streamed body went past `MAX_BODY` (and was cut off).
    pub fn went_over_limit(over_limit: &AtomicBool) -> bool {
        over_limit.load(Ordering::SeqCst)
    }

    /// The streamed body for reqwest, cut off with an error past `MAX_BODY`.
    pub fn stream(head: Bytes, rest: BodyDataStream, over_limit: Arc<AtomicBool>) -> reqwest::Body {
        let mut sent = head.len() as u64;
        let rest = rest.map(move |chunk| {
            let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
            sent += chunk.len() as u64;
            if sent > MAX_BODY {
                over_limit.store(true, Ordering::SeqCst);
                return Err(std::io::Error::other("the request body is over the limit"));
            }
            Ok(chunk)
        });
        reqwest::Body::wrap_stream(futures::stream::once(async { Ok(head) }).chain(rest))
    }
}
