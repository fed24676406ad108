//! The header timeout without a timer per request. hyper's own (`header_read_timeout`)
//! boxes a new timer for every request head it reads, registers it with the runtime's
//! timer wheel and removes it once the head is in, and then reads the socket once more
//! to start the next one: about 3 µs per request on this machine's kind (issue 25, rung 1
//! of the cost ladder). Here each connection has one deadline, checked lazily: requests
//! only mark the connection busy and, when their answer is written, when it became idle
//! (two atomics and a clock read); the connection's one timer sleeps until the deadline
//! that was due when it was armed, and when it fires it closes the connection only if no
//! request is under way and the connection has been waiting for a request head (since it
//! opened or since its last answer) for the whole timeout, else sleeps again until the
//! moment that would be true.
//!
//! The same rule as hyper's: the clock runs from the connection's start, and again from
//! each answer's end, until the next request's head is in; a request being handled or
//! answered (its body streamed, however long) is never cut.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

/// One connection's header deadline.
#[derive(Clone)]
pub struct HeaderDeadline {
    state: Arc<State>,
}

struct State {
    opened: Instant,
    timeout: Duration,
    /// Requests under way (their answer not written yet).
    busy: AtomicU32,
    /// When the last answer was written, in nanoseconds since `opened`.
    idle_since: AtomicU64,
}

impl HeaderDeadline {
    /// The deadline of a connection opened now, whose requests must come within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            state: Arc::new(State {
                opened: Instant::now(),
                timeout,
                busy: AtomicU32::new(0),
                idle_since: AtomicU64::new(0),
            }),
        }
    }

    /// `service` with each request counted until its answer is written.
    pub fn track<S>(&self, service: S) -> Tracked<S> {
        Tracked {
            inner: service,
            deadline: self.clone(),
        }
    }

    /// Resolves once the connection has waited for a request head for the whole timeout
    /// with no request under way: then it is to be closed.
    pub async fn passed(&self) {
        let mut due = self.state.opened + self.state.timeout;
        loop {
            tokio::time::sleep_until(due).await;
            match self.check(Instant::now()) {
                Some(later) => due = later,
                None => return,
            }
        }
    }

    /// What the timer does when it fires at `now`: sleep until the returned moment, or
    /// (`None`) close the connection.
    fn check(&self, now: Instant) -> Option<Instant> {
        let state = &self.state;
        if state.busy.load(Ordering::Acquire) > 0 {
            return Some(now + state.timeout);
        }
        let idle_since = Duration::from_nanos(state.idle_since.load(Ordering::Acquire));
        let idle_due = state.opened + idle_since + state.timeout;
        (now < idle_due).then_some(idle_due)
    }
}

/// A request under way, until its answer is written (or dropped).
struct Busy(Arc<State>);

impl Busy {
    fn new(deadline: &HeaderDeadline) -> Self {
        deadline.state.busy.fetch_add(1, Ordering::AcqRel);
        Self(deadline.state.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let idle_since = self.0.opened.elapsed().as_nanos();
        self.0.idle_since.store(
            u64::try_from(idle_since).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's service, its requests tracked by its [`HeaderDeadline`].
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    deadline: HeaderDeadline,
}

impl<S, Q, B> Service<Request<Q>> for Tracked<S>
where
    S: Service<Request<Q>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Q>) -> Self::Future {
        let busy = Busy::new(&self.deadline);
        TrackedFuture {
            future: self.inner.call(request),
            busy: Some(busy),
        }
    }
}

pin_project! {
    /// The answer of a tracked request, still counted as under way.
    pub struct TrackedFuture<F> {
        #[pin]
        future: F,
        busy: Option<Busy>,
    }
}

impl<F, B> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<TrackedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.future.poll(cx));
        let busy = this.busy.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody { body, _busy: busy })))
    }
}

pin_project! {
    /// An answer's body, its request under way until hyper has written it and drops it.
    pub struct TrackedBody<B> {
        #[pin]
        body: B,
        _busy: Option<Busy>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = Response<http_body_util::Empty<bytes::Bytes>>;
    type Answering = fn(Request<()>) -> std::future::Ready<Result<Answer, Infallible>>;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn service(deadline: &HeaderDeadline) -> Tracked<tower::util::ServiceFn<Answering>> {
        let answer: Answering = |_| std::future::ready(Ok(Response::new(Default::default())));
        deadline.track(tower::service_fn(answer))
    }

    #[test]
    fn a_connection_without_a_request_is_closed_at_the_timeout() {
        let deadline = HeaderDeadline::new(TIMEOUT);
        let opened = deadline.state.opened;
        let just_before = opened + TIMEOUT - Duration::from_millis(1);
        assert_eq!(deadline.check(just_before), Some(opened + TIMEOUT));
        assert_eq!(deadline.check(opened + TIMEOUT), None);
    }

    #[tokio::test]
    async fn a_request_under_way_is_never_cut_and_the_clock_restarts_at_its_answer() {
        let deadline = HeaderDeadline::new(TIMEOUT);
        let opened = deadline.state.opened;
        let response = service(&deadline)
            .call(Request::new(()))
            .await
            .expect("answered");
        // Its answer is still being written (hyper holds the body), long past the timeout.
        let much_later = opened + TIMEOUT * 100;
        assert_eq!(deadline.check(much_later), Some(much_later + TIMEOUT));
        let before_written = Instant::now();
        drop(response);
        let after_written = Instant::now();
        let due = deadline
            .check(after_written)
            .expect("a connection just answered waits for its next request");
        assert!(due >= before_written + TIMEOUT && due <= after_written + TIMEOUT);
        assert_eq!(deadline.check(due), None, "then no request came");
    }

    #[tokio::test]
    async fn a_request_dropped_before_its_answer_is_no_longer_under_way() {
        let deadline = HeaderDeadline::new(TIMEOUT);
        let opened = deadline.state.opened;
        let answering = service(&deadline).call(Request::new(()));
        assert_eq!(deadline.state.busy.load(Ordering::Acquire), 1);
        drop(answering);
        assert_eq!(deadline.state.busy.load(Ordering::Acquire), 0);
        assert!(deadline.check(opened + TIMEOUT * 2).is_none());
    }
}
