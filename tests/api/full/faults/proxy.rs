//! A TCP fault proxy of the tests' own: listens on 127.0.0.1:0, forwards to one target,
//! and is switched at runtime between passing traffic and the faults a network gives.
//!
//! A switch applies to the connections already open as well as to new ones:
//! - `Pass`: bytes flow both ways.
//! - `Latency(d)`: every chunk the target sends reaches the client `d` later (a request
//!   and its answer take `d` longer); what the client sends passes at once.
//! - `Reset`: every open connection is reset (RST to both sides), and so is every new one
//!   as soon as it is accepted.
//! - `BlackHole`: a partition. Nothing is forwarded either way and nothing is answered;
//!   new connections are accepted and held without reaching the target. When it ends the
//!   held bytes flow again, as TCP's retransmissions would deliver them.
//! - `HalfOpen`: what the client sends reaches the target, but the target's answers are
//!   swallowed (a peer whose return path died). Such a connection has lost bytes: when the
//!   fault ends it is reset rather than resumed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Latency(Duration),
    Reset,
    BlackHole,
    HalfOpen,
}

/// A running proxy; it stops (resetting every connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy to `target`, passing traffic.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let accept_loop = tokio::spawn({
            let mode = mode.subscribe();
            let accepted = accepted.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(connection(client, target, mode.clone()));
                }
            }
        });
        Self {
            addr,
            mode,
            accepted,
            accept_loop,
        }
    }

    /// Where clients connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Connections accepted so far (each one a client's attempt to reach the target).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        // Dropping the sender ends every connection (see `connection`).
        self.mode.send_replace(Mode::Reset);
    }
}

/// Resolves once the mode is `wanted`, or the proxy is gone (which counts as `Reset`).
async fn until(mode: &mut watch::Receiver<Mode>, wanted: impl Fn(Mode) -> bool) -> Mode {
    match mode.wait_for(|m| wanted(*m)).await {
        Ok(m) => *m,
        Err(_) => Mode::Reset,
    }
}

async fn connection(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // A new connection waits out a black hole before it reaches the target.
    let now = until(&mut mode, |m| m != Mode::BlackHole).await;
    if now == Mode::Reset {
        let _ = client.set_zero_linger();
        return;
    }
    let Ok(upstream) = TcpStream::connect(target).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let (up_mode, down_mode) = (mode.clone(), mode.clone());
    let reset = {
        let forwarding = async {
            let up = pump(
                &mut client_read,
                &mut upstream_write,
                Direction::ToTarget,
                up_mode,
            );
            let down = pump(
                &mut upstream_read,
                &mut client_write,
                Direction::ToClient,
                down_mode,
            );
            tokio::pin!(up, down);
            let (mut up_done, mut down_done) = (false, false);
            // Either direction failing resets the connection at once; one direction
            // ending (a half-close) leaves the other to finish.
            while !(up_done && down_done) {
                let failed = tokio::select! {
                    sent = &mut up, if !up_done => { up_done = true; sent.is_err() }
                    sent = &mut down, if !down_done => { down_done = true; sent.is_err() }
                };
                if failed {
                    return true;
                }
            }
            false
        };
        tokio::select! {
            reset = forwarding => reset,
            _ = until(&mut mode, |m| m == Mode::Reset) => true,
        }
    };
    if reset {
        let _ = client_read.as_ref().set_zero_linger();
        let _ = upstream_read.as_ref().set_zero_linger();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToTarget,
    ToClient,
}

/// Forwards one direction until its reader ends (`Ok`) or the connection must be reset
/// (`Err`). Chunks are stamped when read, so that latency delays each by `d` from its
/// arrival, not from the previous chunk's delivery.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    direction: Direction,
    mode: watch::Receiver<Mode>,
) -> Result<(), ()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reading = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writing = async move {
        let mut mode = mode;
        let mut lost_bytes = false;
        loop {
            // A connection that lost bytes is reset as soon as the fault ends, even if
            // nothing more comes (a client waiting for an answer that was swallowed).
            let next = if lost_bytes {
                tokio::select! {
                    next = rx.recv() => next,
                    _ = until(&mut mode, |m| m != Mode::HalfOpen) => return Err(()),
                }
            } else {
                rx.recv().await
            };
            let Some((read_at, chunk)) = next else { break };
            loop {
                let now = until(&mut mode, |m| m != Mode::BlackHole).await;
                match now {
                    Mode::Reset => return Err(()),
                    Mode::HalfOpen if direction == Direction::ToClient => {
                        lost_bytes = true;
                        break;
                    }
                    _ if lost_bytes => return Err(()),
                    Mode::Latency(d) if direction == Direction::ToClient => {
                        // A switch meanwhile (a black hole, a reset) is seen on the next turn.
                        tokio::select! {
                            () = tokio::time::sleep_until(read_at + d) => {}
                            _ = mode.changed() => continue,
                        }
                    }
                    _ => {}
                }
                to.write_all(&chunk).await.map_err(|_| ())?;
                break;
            }
        }
        if lost_bytes {
            // The client never learns that the target closed: it waits until the fault
            // ends, and then its connection is reset.
            until(&mut mode, |m| m != Mode::HalfOpen).await;
            return Err(());
        }
        let _ = to.shutdown().await;
        Ok(())
    };
    // The writer ends once the reader has ended and everything read is written, or
    // as soon as the connection must be reset.
    let reading = async {
        reading.await;
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = reading => unreachable!("pending"),
        written = writing => written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on 127.0.0.1:0 that counts the connections it gets.
    async fn echo() -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reached = Arc::new(AtomicU64::new(0));
        let counter = reached.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, reached)
    }

    async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    const LONG: Duration = Duration::from_millis(400);

    #[tokio::test]
    async fn the_proxy_passes_delays_resets_black_holes_and_half_opens_on_command() {
        let (target, reached) = echo().await;
        let proxy = FaultProxy::start(target).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut open, b"pass").await.unwrap(), b"pass");

        proxy.set(Mode::Latency(LONG));
        let started = Instant::now();
        assert_eq!(round_trip(&mut open, b"slow").await.unwrap(), b"slow");
        assert!(started.elapsed() >= LONG, "the answer came late");

        // A black hole holds an open connection's bytes and a new connection's arrival.
        proxy.set(Mode::BlackHole);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        let answer = tokio::time::timeout(LONG, round_trip(&mut open, b"held")).await;
        assert!(answer.is_err(), "nothing comes back through a black hole");
        fresh.write_all(b"late").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(reached.load(Ordering::SeqCst), 1, "the new one waits");
        // When it ends, what was held flows.
        proxy.set(Mode::Pass);
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"held");
        fresh.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"late");

        // Half-open: the target gets the bytes, the client never gets the answer, and
        // when the fault ends the connection is reset.
        proxy.set(Mode::HalfOpen);
        let answer = tokio::time::timeout(LONG, round_trip(&mut open, b"lost")).await;
        assert!(answer.is_err(), "no answer on a half-open connection");
        proxy.set(Mode::Pass);
        let after = round_trip(&mut open, b"more").await;
        assert!(after.is_err(), "a connection that lost bytes is reset");

        // Reset: open connections and new ones alike.
        proxy.set(Mode::Reset);
        let read = tokio::time::timeout(LONG, fresh.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "an open connection is cut: {read:?}"
        );
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let read = tokio::time::timeout(LONG, refused.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "a new one too: {read:?}");
        proxy.set(Mode::Pass);
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"back").await.unwrap(), b"back");
        assert_eq!(proxy.accepted(), 4);
    }
}
