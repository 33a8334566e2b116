//! One client connection: bytes in → frames → requests to the coordinator; answers from the
//! peer's outbox → bytes out. One task per connection, one partial-message buffer each.
//!
//! Reads land in a per-thread scratch buffer and frames are parsed from there; only the
//! unfinished tail of a message is copied into the connection's own buffer. An idle
//! connection therefore holds no read buffer at all, which keeps thousands of idle clients
//! cheap.

use super::parse::{parse_request, Kinds};
use super::peer::Peer;
use crate::coordinator::{self, message::Demand, message::Message};
use resman_sdk::frame::Splitter;
use resman_sdk::protocol::ErrorCode;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// Size of each worker thread's read buffer.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Buffers above this size are released once empty, so a burst does not pin memory.
const KEEP_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// What the connection's limits are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) max_message_bytes: usize,
    pub(crate) max_pending_per_connection: usize,
    pub(crate) max_pending_total: usize,
}

pub(crate) struct Connection {
    stream: TcpStream,
    peer: Arc<Peer>,
    splitter: Splitter,
    /// The request types this client sent, shared by its requests.
    kinds: Kinds,
    /// The start of a message whose end has not arrived.
    partial: Vec<u8>,
    /// Answers being written; swapped with the peer's outbox.
    writing: Vec<u8>,
    coordinator: UnboundedSender<Message>,
    limits: ConnLimits,
}

enum Read {
    More,
    Closed,
    TooLarge,
}

impl Connection {
    pub(crate) fn new(
        stream: TcpStream,
        peer: Arc<Peer>,
        coordinator: UnboundedSender<Message>,
        limits: ConnLimits,
    ) -> Self {
        Connection {
            stream,
            peer,
            splitter: Splitter::new(),
            kinds: Kinds::default(),
            partial: Vec::new(),
            writing: Vec::new(),
            coordinator,
            limits,
        }
    }

    /// Serves the connection until the client leaves, fails, or the host has drained.
    pub(crate) async fn serve(mut self, drained: CancellationToken) {
        if let Err(err) = self.run(&drained).await {
            tracing::debug!(conn = self.peer.id, error = %err, "connection failed");
        }
        self.peer.close();
        // Always told, not only with requests pending: the client may hold leases that end
        // with its connection, or have an acquire waiting.
        coordinator::disconnected(&self.coordinator, &self.peer);
        tracing::debug!(conn = self.peer.id, "connection closed");
    }

    async fn run(&mut self, drained: &CancellationToken) -> io::Result<()> {
        // Its own handle, so that waiting for answers does not borrow the connection the
        // read needs.
        let peer = Arc::clone(&self.peer);
        // Both waits live across the loop's turns: made anew at each turn, each would join
        // and leave its waiter list (a lock each) at every read and every answer.
        let mut drained = pin!(drained.cancelled());
        let mut woken = pin!(peer.wake.notified());
        loop {
            tokio::select! {
                biased;
                () = drained.as_mut() => return self.flush().await,
                () = woken.as_mut() => {
                    woken.set(peer.wake.notified());
                    self.flush().await?;
                }
                read = self.read() => match read? {
                    Read::More => self.flush().await?,
                    Read::Closed => return Ok(()),
                    Read::TooLarge => return self.flush().await,
                },
            }
        }
    }

    /// Waits for bytes, reads what the socket has and submits the complete requests in it.
    ///
    /// Through `poll_read`, which takes a read that did not fill the buffer as the socket
    /// drained (epoll is edge-triggered) and waits for the next readiness: a read that empties
    /// the socket costs one `recv`, not a second that finds nothing. The bytes are taken from
    /// the thread's scratch buffer within the same poll, before the task can move threads.
    fn read(&mut self) -> impl Future<Output = io::Result<Read>> + '_ {
        std::future::poll_fn(move |cx| {
            SCRATCH.with_borrow_mut(|scratch| {
                let mut buf = ReadBuf::new(scratch);
                ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
                let n = buf.filled().len();
                Poll::Ready(Ok(match n {
                    0 => Read::Closed,
                    n => self.ingest(&scratch[..n]),
                }))
            })
        })
    }

    fn ingest(&mut self, data: &[u8]) -> Read {
        let mut demands = Vec::new();
        let fits = if self.partial.is_empty() {
            let (fits, consumed) = self.split(data, &mut demands);
            self.partial.extend_from_slice(&data[consumed..]);
            fits
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let (fits, consumed) = self.split(&buf, &mut demands);
            buf.drain(..consumed);
            self.partial = buf;
            fits
        };
        if self.partial.is_empty() && self.partial.capacity() > KEEP_BYTES {
            self.partial = Vec::new();
        }
        if !demands.is_empty() {
            coordinator::submit(&self.coordinator, demands);
        }
        if fits && self.partial.len() <= self.limits.max_message_bytes {
            Read::More
        } else {
            let err = format!(
                "message exceeds the limit of {} bytes; closing the connection",
                self.limits.max_message_bytes
            );
            self.peer
                .reply_bad_message(None, ErrorCode::MessageTooLarge, &err);
            Read::TooLarge
        }
    }

    /// Splits `buf` into messages; returns whether all fit the size limit and how many bytes
    /// were consumed.
    fn split(&mut self, buf: &[u8], demands: &mut Vec<Demand>) -> (bool, usize) {
        let mut pos = 0;
        while let Some(frame) = self.splitter.next_frame(&buf[pos..]) {
            if frame.body_end > self.limits.max_message_bytes {
                return (false, pos + frame.consumed);
            }
            self.message(&buf[pos..pos + frame.body_end], demands);
            pos += frame.consumed;
        }
        (true, pos)
    }

    fn message(&mut self, body: &[u8], demands: &mut Vec<Demand>) {
        let body = body.trim_ascii();
        if body.is_empty() {
            return;
        }
        if let Some(framing) = self.splitter.framing() {
            self.peer.set_framing(framing);
        }
        let request = match parse_request(body, self.peer.id, &mut self.kinds) {
            Ok(request) => request,
            Err(bad) => {
                let query_index = bad.query_index.as_ref();
                return self.peer.reply_bad_message(
                    query_index,
                    ErrorCode::BadRequest,
                    &bad.reason,
                );
            }
        };
        let queued = self.peer.pending();
        if queued >= self.limits.max_pending_per_connection {
            let err = format!("this connection has {queued} requests pending; wait for answers");
            return self.peer.reply_refused(
                &request.kind,
                &request.query_index,
                ErrorCode::Overloaded,
                &err,
            );
        }
        if self.peer.gauge().pending() >= self.limits.max_pending_total {
            let err = "the server's queues are full; try again later";
            return self.peer.reply_refused(
                &request.kind,
                &request.query_index,
                ErrorCode::Overloaded,
                err,
            );
        }
        demands.push(Demand::new(request, self.peer.clone()));
    }

    /// Writes whatever answers are waiting in the outbox.
    async fn flush(&mut self) -> io::Result<()> {
        self.peer.take_outbox(&mut self.writing);
        if self.writing.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.writing).await?;
        self.writing.clear();
        if self.writing.capacity() > KEEP_BYTES {
            self.writing = Vec::new();
        }
        Ok(())
    }
}
