//! The async Rust client of resman (feature `client`).
//!
//! One [`Client`] holds one TCP connection to a resman server and keeps any number of
//! requests in flight on it at once, from any number of tasks: the protocol lets responses
//! come back in any order, so every request carries its own `queryIndex` and the client
//! matches each answer to the caller waiting for it. Opening a connection per request, or
//! waiting for each answer before sending the next question, would throw that away.
//!
//! Inside, a writer task sends the queued requests, coalescing whatever has queued up since
//! its last write into one write, and a reader task splits the incoming bytes with the same
//! [`Splitter`] the server uses and hands every response to its caller. [`Client`] is an
//! `Arc` inside: clone it freely, one clone per task.
//!
//! Failures are values of [`ClientError`]: an error response is [`ClientError::Server`] with
//! its stable [`ErrorCode`]; a request unanswered within the timeout
//! (default 10 s, as in the original Node client) is [`ClientError::Timeout`]; when the
//! connection closes or fails, every request in flight fails at once with
//! [`ClientError::ConnectionLost`], and so does every later request, at once.
//!
//! ```no_run
//! use resman_sdk::client::Client;
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), resman_sdk::client::ClientError> {
//! // SOCKET_HOST and SOCKET_PORT from the environment or `.env`, as the original client.
//! let client = Client::connect_env().await?;
//! let pong = client.request("ping", ()).await?;
//! println!("{pong}");
//!
//! #[derive(serde::Deserialize)]
//! struct Proxy {
//!     proxy: String,
//! }
//! match client.request_as::<Proxy>("getProxy", json!({"region": "eu"})).await {
//!     Ok(p) => println!("proxy {}", p.proxy),
//!     Err(e) if e.server_code() == Some(resman_sdk::ErrorCode::Unavailable) => {
//!         println!("no proxy free")
//!     }
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```

use crate::frame::{push_escaping_crabs, Splitter};
use crate::protocol::{ErrorCode, ErrorReply, Framing, Request, Response, DEFAULT_PORT};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long a request waits for its answer unless configured otherwise: the original Node
/// client's 10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest response the client reads unless configured otherwise: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 64 * 1024 * 1024;

/// At most this many queued requests go into one write.
const MAX_BATCH: usize = 256;

/// How much the reader asks the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What can go wrong with a [`Client`] or a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened, or the address did not resolve.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address as given when it did not resolve (`SOCKET_HOST:SOCKET_PORT`, or what
        /// was passed to `connect` in its `Debug` form, such as `"nohost:5"`), else the
        /// socket addresses it resolved to.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The client's configuration is unusable: `.env` could not be read, or `SOCKET_PORT`
    /// is not a port number.
    #[error("bad client configuration: {0}")]
    Config(String),
    /// No answer came within the request timeout. The request may still run on the server;
    /// a late answer is dropped.
    #[error("no answer to '{kind}' within {after:?}")]
    Timeout {
        /// The request's type.
        kind: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The connection closed or failed. Every request in flight fails with this at once,
    /// and every later request on the same [`Client`] fails with it immediately; connect
    /// again to continue.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server answered with an error (`resultJob` = `{"err", "code"}`); match on its
    /// [`code`](ErrorReply::code).
    #[error("server error: {0}")]
    Server(ErrorReply),
    /// The request's payload could not be serialised to JSON.
    #[error("cannot encode the payload of '{kind}': {source}")]
    Encode {
        /// The request's type.
        kind: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The result did not deserialise into the type asked for with [`Client::request_as`].
    #[error("cannot decode the result of '{kind}': {source}")]
    Decode {
        /// The request's type.
        kind: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The server's error code, if this is [`ClientError::Server`].
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(reply) => Some(reply.code),
            _ => None,
        }
    }
}

/// Options for a [`Client`]; start from [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    timeout: Duration,
    framing: Framing,
    max_response_size: usize,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            timeout: DEFAULT_TIMEOUT,
            framing: Framing::Crab,
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
        }
    }
}

impl ClientBuilder {
    /// The defaults: [`DEFAULT_TIMEOUT`], [`Framing::Crab`], [`DEFAULT_MAX_RESPONSE_SIZE`].
    pub fn new() -> Self {
        ClientBuilder::default()
    }

    /// How long each request waits for its answer before failing with
    /// [`ClientError::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How messages are delimited: `🦀` (the original's, the default) or newlines. The
    /// server answers in the framing of the connection's first message.
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// The largest response the client accepts; a larger one closes the connection with
    /// [`ClientError::ConnectionLost`], so a misbehaving peer cannot exhaust memory.
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response_size = bytes;
        self
    }

    /// Connects to `addr` with these options. Needs a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] if `addr` does not resolve (the error names it as given) or
    /// no address it resolves to accepts the connection (the error names those).
    pub async fn connect(
        self,
        addr: impl ToSocketAddrs + fmt::Debug,
    ) -> Result<Client, ClientError> {
        let given = format!("{addr:?}");
        let stream = open(addr, Label::Unresolved(&given)).await?;
        Ok(self.start(stream))
    }

    /// Connects to `SOCKET_HOST:SOCKET_PORT` with these options, as the original client
    /// does. Each variable comes from the environment if set there, else from `.env` in
    /// the working directory if it holds it, else defaults to `localhost` and
    /// [`DEFAULT_PORT`]. The process environment is not modified.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] if `.env` exists but cannot be read or parsed, or
    /// `SOCKET_PORT` is not a port number; [`ClientError::Connect`] as for
    /// [`connect`](Self::connect).
    pub async fn connect_env(self) -> Result<Client, ClientError> {
        let (host, port) = env_address()?;
        let label = format!("{host}:{port}");
        let stream = open((host.as_str(), port), Label::Always(&label)).await?;
        Ok(self.start(stream))
    }

    /// Starts a client on an open connection.
    fn start(self, stream: TcpStream) -> Client {
        // The writer coalesces on its own; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let shared = Arc::new(Shared::default());
        let (outgoing, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write_half, queue, Arc::clone(&shared)));
        let reader = tokio::spawn(read_loop(
            read_half,
            self.framing,
            self.max_response_size,
            Arc::clone(&shared),
        ));
        Client {
            inner: Arc::new(Inner {
                shared,
                outgoing,
                reader,
                next_index: AtomicU64::new(1),
                framing: self.framing,
            }),
            timeout: self.timeout,
        }
    }
}

/// A connection to a resman server. Cheap to clone: clones share the connection, and any
/// number of requests from any number of tasks may be in flight on it at once.
///
/// The connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("framing", &self.inner.framing)
            .field("timeout", &self.timeout)
            .field("in_flight", &self.inner.shared.lock().pending.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Options for a client: timeout, framing.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Connects to `addr` with the default options. Needs a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] if `addr` does not resolve or no address it resolves to
    /// accepts the connection; see [`ClientBuilder::connect`].
    pub async fn connect(addr: impl ToSocketAddrs + fmt::Debug) -> Result<Client, ClientError> {
        ClientBuilder::new().connect(addr).await
    }

    /// Connects to `SOCKET_HOST:SOCKET_PORT` (environment, else `.env`, else
    /// `localhost:41969`) with the default options; see [`ClientBuilder::connect_env`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for an unreadable `.env` or a bad `SOCKET_PORT`;
    /// [`ClientError::Connect`] if the connection cannot be opened.
    pub async fn connect_env() -> Result<Client, ClientError> {
        ClientBuilder::new().connect_env().await
    }

    /// Sends a request of type `kind` with `payload` (use `()` for none) and returns its
    /// `resultJob`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] for an error response, [`ClientError::Timeout`] if no
    /// answer comes in time, [`ClientError::ConnectionLost`] if the connection is or
    /// becomes unusable, [`ClientError::Encode`] if `payload` does not serialise.
    pub async fn request(
        &self,
        kind: &str,
        payload: impl Serialize,
    ) -> Result<serde_json::Value, ClientError> {
        let response = self.round_trip(kind, payload).await?;
        match response.error() {
            Some(reply) => Err(ClientError::Server(reply)),
            None => Ok(response.result_job),
        }
    }

    /// Like [`request`](Self::request), deserialising the `resultJob` into `T`.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), and [`ClientError::Decode`] if the result is not a
    /// `T`.
    pub async fn request_as<T: DeserializeOwned>(
        &self,
        kind: &str,
        payload: impl Serialize,
    ) -> Result<T, ClientError> {
        let result = self.request(kind, payload).await?;
        serde_json::from_value(result).map_err(|source| ClientError::Decode {
            kind: kind.to_owned(),
            source,
        })
    }

    /// A handle on the same connection whose requests wait `timeout` for their answers
    /// instead of this one's.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            timeout,
        }
    }

    /// How long each request waits for its answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The framing this client writes and reads.
    pub fn framing(&self) -> Framing {
        self.inner.framing
    }

    /// The reason the connection is unusable, if it is; every request then fails with
    /// [`ClientError::ConnectionLost`].
    pub fn closed_reason(&self) -> Option<String> {
        self.inner.shared.lock().closed.clone()
    }

    async fn round_trip(
        &self,
        kind: &str,
        payload: impl Serialize,
    ) -> Result<Response, ClientError> {
        let inner = &*self.inner;
        let query_index = inner.next_index.fetch_add(1, Ordering::Relaxed);
        let frame = encode(inner.framing, kind, query_index, payload)?;

        let (answer, answered) = oneshot::channel();
        {
            let mut state = inner.shared.lock();
            if let Some(reason) = &state.closed {
                return Err(ClientError::ConnectionLost(reason.clone()));
            }
            state.pending.insert(query_index, answer);
        }
        // Removes the entry however this future ends: answered, timed out or dropped.
        let _pending = PendingGuard {
            shared: &inner.shared,
            query_index,
        };
        if inner.outgoing.send(frame).is_err() {
            return Err(inner.shared.lost());
        }
        match tokio::time::timeout(self.timeout, answered).await {
            Ok(Ok(response)) => Ok(response),
            // The sender was dropped: the connection failed and took every pending request.
            Ok(Err(_)) => Err(inner.shared.lost()),
            Err(_) => Err(ClientError::Timeout {
                kind: kind.to_owned(),
                after: self.timeout,
            }),
        }
    }
}

/// One framed request, ready to write.
fn encode(
    framing: Framing,
    kind: &str,
    query_index: u64,
    payload: impl Serialize,
) -> Result<Vec<u8>, ClientError> {
    let request = Request {
        kind: kind.to_owned(),
        query_index,
        payload,
    };
    let json = serde_json::to_vec(&request).map_err(|source| ClientError::Encode {
        kind: kind.to_owned(),
        source,
    })?;
    let terminator = framing.terminator();
    let mut frame = Vec::with_capacity(json.len() + terminator.len());
    match framing {
        // resman finds boundaries outside strings, but the original server splits blindly:
        // escaping keeps crabs in payloads safe for both.
        Framing::Crab => push_escaping_crabs(&mut frame, &json),
        // Compact JSON holds no raw newline.
        Framing::Newline => frame.extend_from_slice(&json),
    }
    frame.extend_from_slice(terminator);
    Ok(frame)
}

struct Inner {
    shared: Arc<Shared>,
    /// Framed requests for the writer task; dropping it ends the writer, which closes the
    /// sending side of the connection.
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    reader: JoinHandle<()>,
    next_index: AtomicU64,
    framing: Framing,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader holds no reference to `Inner`; stop it so the socket closes.
        self.reader.abort();
    }
}

/// What the request futures, the reader and the writer share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Callers waiting for an answer, by `queryIndex`.
    pending: HashMap<u64, oneshot::Sender<Response>>,
    /// Set once the connection is unusable; no request is admitted after.
    closed: Option<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock guards no invariant a panic could break halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection unusable and fails every pending request at once (dropping its
    /// sender wakes its caller, who reads the reason). The first reason wins.
    fn close(&self, reason: String) {
        let pending = {
            let mut state = self.lock();
            state.closed.get_or_insert(reason);
            std::mem::take(&mut state.pending)
        };
        drop(pending);
    }

    fn lost(&self) -> ClientError {
        let reason = self.lock().closed.clone();
        ClientError::ConnectionLost(reason.unwrap_or_else(|| "connection closed".to_owned()))
    }

    /// Hands `response` to the caller waiting for it; answers nobody waits for (timed
    /// out, or never asked) are dropped.
    fn complete(&self, response: Response) {
        let Some(query_index) = response.query_index.as_ref().and_then(|n| n.as_u64()) else {
            return;
        };
        let waiting = self.lock().pending.remove(&query_index);
        if let Some(answer) = waiting {
            let _ = answer.send(response);
        }
    }
}

struct PendingGuard<'a> {
    shared: &'a Shared,
    query_index: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().pending.remove(&self.query_index);
    }
}

/// Writes queued requests, everything queued since the last write in one write, until the
/// client is dropped (then closes the sending side) or a write fails (then fails the client).
async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut out = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let written = if let [frame] = batch.as_slice() {
            socket.write_all(frame).await
        } else {
            out.clear();
            for frame in &batch {
                out.extend_from_slice(frame);
            }
            socket.write_all(&out).await
        };
        batch.clear();
        if let Err(e) = written {
            shared.close(format!("write failed: {e}"));
            return;
        }
    }
    let _ = socket.shutdown().await;
}

/// Reads responses and completes their requests until the connection ends, then fails the
/// client with the reason.
async fn read_loop(
    mut socket: OwnedReadHalf,
    framing: Framing,
    max_response_size: usize,
    shared: Arc<Shared>,
) {
    let reason = read_responses(&mut socket, framing, max_response_size, &shared).await;
    shared.close(reason);
}

/// Returns why reading stopped.
async fn read_responses(
    socket: &mut OwnedReadHalf,
    framing: Framing,
    max_response_size: usize,
    shared: &Shared,
) -> String {
    let mut splitter = Splitter::with_framing(framing);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        match socket.read_buf(&mut buf).await {
            Ok(0) => return "the server closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) => return format!("read failed: {e}"),
        }
        let mut start = 0;
        while let Some(frame) = splitter.next_frame(&buf[start..]) {
            let body = &buf[start..start + frame.body_end];
            start += frame.consumed;
            if body.trim_ascii().is_empty() {
                continue;
            }
            // A message that is not a response cannot be matched to a caller; skip it.
            if let Ok(response) = serde_json::from_slice::<Response>(body) {
                shared.complete(response);
            }
        }
        buf.drain(..start);
        if buf.len() > max_response_size {
            return format!("a response exceeds {max_response_size} bytes");
        }
    }
}

/// How a connect error names the address.
#[derive(Clone, Copy)]
enum Label<'a> {
    /// By this text, always.
    Always(&'a str),
    /// By this text if it did not resolve, else by the addresses it resolved to.
    Unresolved(&'a str),
}

/// Opens a TCP connection to the first address `addr` resolves to that accepts it; `label`
/// says how an error names the address.
async fn open(addr: impl ToSocketAddrs, label: Label<'_>) -> Result<TcpStream, ClientError> {
    let connect_error = |addrs: &[SocketAddr], source| {
        let addr = match label {
            Label::Always(label) => label.to_owned(),
            Label::Unresolved(given) if addrs.is_empty() => given.to_owned(),
            Label::Unresolved(_) => addrs
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        };
        ClientError::Connect { addr, source }
    };
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(addr).await {
        Ok(addrs) => addrs.collect(),
        Err(source) => return Err(connect_error(&[], source)),
    };
    let mut last_error = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    let source = last_error.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing")
    });
    Err(connect_error(&addrs, source))
}

/// `SOCKET_HOST` and `SOCKET_PORT`: the environment first, then `.env`, then defaults.
fn env_address() -> Result<(String, u16), ClientError> {
    let mut host = std::env::var("SOCKET_HOST").ok();
    let mut port = std::env::var("SOCKET_PORT").ok();
    if host.is_none() || port.is_none() {
        match dotenvy::from_path_iter(".env") {
            Ok(entries) => {
                for entry in entries {
                    let (key, value) =
                        entry.map_err(|e| ClientError::Config(format!("cannot read .env: {e}")))?;
                    // The first declaration wins, as with dotenvy's loaders.
                    match key.as_str() {
                        "SOCKET_HOST" if host.is_none() => host = Some(value),
                        "SOCKET_PORT" if port.is_none() => port = Some(value),
                        _ => {}
                    }
                }
            }
            Err(e) if e.not_found() => {}
            Err(e) => return Err(ClientError::Config(format!("cannot read .env: {e}"))),
        }
    }
    let host = host
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let port = match port.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_PORT,
        Some(text) => text.parse().map_err(|_| {
            ClientError::Config(format!("SOCKET_PORT is not a port number: {text:?}"))
        })?,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CRAB;
    use serde_json::{json, Value};
    use tokio::net::TcpListener;

    /// The scripted server side of one connection.
    struct Peer {
        stream: TcpStream,
        splitter: Splitter,
        framing: Framing,
        buf: Vec<u8>,
    }

    impl Peer {
        /// Reads the next request; `None` at end of stream. Also returns its raw bytes,
        /// terminator included.
        async fn next_request(&mut self) -> Option<(Request, Vec<u8>)> {
            loop {
                if let Some(frame) = self.splitter.next_frame(&self.buf) {
                    let raw: Vec<u8> = self.buf.drain(..frame.consumed).collect();
                    let request = serde_json::from_slice(&raw[..frame.body_end]).unwrap();
                    return Some((request, raw));
                }
                if self.stream.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return None;
                }
            }
        }

        async fn requests(&mut self, n: usize) -> Vec<Request> {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(self.next_request().await.unwrap().0);
            }
            out
        }

        /// Writes a response, in two pieces split inside the terminator.
        async fn answer(&mut self, request: &Request, result_job: Value) {
            let response = json!({
                "type": request.kind,
                "queryIndex": request.query_index,
                "resultJob": result_job,
            });
            let mut bytes = serde_json::to_vec(&response).unwrap();
            bytes.extend_from_slice(self.framing.terminator());
            let cut = bytes.len() - 1;
            self.stream.write_all(&bytes[..cut]).await.unwrap();
            self.stream.flush().await.unwrap();
            self.stream.write_all(&bytes[cut..]).await.unwrap();
        }
    }

    /// A client connected to a peer run by `script`, which gets the accepted connection.
    async fn setup<F, Fut>(builder: ClientBuilder, script: F) -> (Client, JoinHandle<()>)
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let framing = builder.framing;
        let peer = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            script(Peer {
                stream,
                splitter: Splitter::with_framing(framing),
                framing,
                buf: Vec::new(),
            })
            .await;
        });
        let client = builder.connect(addr).await.unwrap();
        (client, peer)
    }

    #[test]
    fn client_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Client>();
    }

    #[tokio::test]
    async fn answers_out_of_order_reach_their_callers() {
        const N: usize = 20;
        let (client, peer) = setup(Client::builder(), |mut peer| async move {
            // Every request is in flight before the first answer, which then go out in
            // reverse order.
            let requests = peer.requests(N).await;
            for request in requests.iter().rev() {
                let echo = json!({"kind": request.kind, "payload": request.payload});
                peer.answer(request, echo).await;
            }
        })
        .await;

        let mut callers = Vec::new();
        for i in 0..N {
            let client = client.clone();
            callers.push(tokio::spawn(async move {
                let kind = format!("kind{i}");
                let result = client.request(&kind, json!({ "i": i })).await.unwrap();
                assert_eq!(result, json!({"kind": kind, "payload": {"i": i}}));
            }));
        }
        for caller in callers {
            caller.await.unwrap();
        }
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn error_response_surfaces_its_code() {
        let (client, _peer) = setup(Client::builder(), |mut peer| async move {
            let requests = peer.requests(3).await;
            let err = json!({"err": "no proxy free", "code": "unavailable"});
            peer.answer(&requests[0], err).await;
            peer.answer(&requests[1], json!({"err": "old-style error"}))
                .await;
            peer.answer(&requests[2], json!({"proxy": "10.0.0.7:3128"}))
                .await;
            // Keep the connection open until the client is done.
            let _ = peer.next_request().await;
        })
        .await;

        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Proxy {
            proxy: String,
        }
        let (a, b, c) = tokio::join!(
            client.request("getProxy", ()),
            client.request("getTicket", ()),
            client.request_as::<Proxy>("getProxy", json!({"region": "eu"})),
        );
        let err = a.unwrap_err();
        assert_eq!(err.server_code(), Some(ErrorCode::Unavailable));
        match err {
            ClientError::Server(reply) => assert_eq!(reply.err, "no proxy free"),
            other => panic!("expected a server error, got {other:?}"),
        }
        assert_eq!(b.unwrap_err().server_code(), Some(ErrorCode::Other));
        assert_eq!(
            c.unwrap(),
            Proxy {
                proxy: "10.0.0.7:3128".into()
            }
        );
    }

    #[tokio::test]
    async fn result_of_the_wrong_shape_is_a_decode_error() {
        let (client, _peer) = setup(Client::builder(), |mut peer| async move {
            let requests = peer.requests(1).await;
            peer.answer(&requests[0], json!({"pong": "not a number"}))
                .await;
            let _ = peer.next_request().await;
        })
        .await;
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Pong {
            pong: u64,
        }
        let err = client.request_as::<Pong>("ping", ()).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Decode { ref kind, .. } if kind == "ping"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn peer_closing_fails_every_pending_request_and_every_later_one() {
        let (client, peer) = setup(Client::builder(), |mut peer| async move {
            // All three are pending when the connection closes.
            peer.requests(3).await;
        })
        .await;

        let (a, b, c) = tokio::join!(
            client.request("a", ()),
            client.request("b", ()),
            client.request("c", ()),
        );
        for result in [a, b, c] {
            assert!(
                matches!(result, Err(ClientError::ConnectionLost(_))),
                "{result:?}"
            );
        }
        peer.await.unwrap();
        assert!(client.closed_reason().is_some());
        let later = client.request("d", ()).await;
        assert!(
            matches!(later, Err(ClientError::ConnectionLost(_))),
            "{later:?}"
        );
    }

    #[tokio::test]
    async fn timeout_then_the_late_answer_is_dropped() {
        let (client, peer) = setup(Client::builder(), |mut peer| async move {
            let first = peer.requests(1).await.remove(0);
            // The second request is sent only after the first timed out: answer the first
            // late, then the second.
            let second = peer.requests(1).await.remove(0);
            peer.answer(&first, json!({"late": true})).await;
            peer.answer(&second, json!({"on_time": true})).await;
            let _ = peer.next_request().await;
        })
        .await;

        let after = Duration::from_millis(20);
        let err = client
            .with_timeout(after)
            .request("slow", ())
            .await
            .unwrap_err();
        match err {
            ClientError::Timeout { kind, after: t } => {
                assert_eq!(kind, "slow");
                assert_eq!(t, after);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(client.inner.shared.lock().pending.is_empty());
        // The late answer matches nobody and is ignored; this one gets its own.
        assert_eq!(client.timeout(), DEFAULT_TIMEOUT);
        let result = client.request("fast", ()).await.unwrap();
        assert_eq!(result, json!({"on_time": true}));
        drop(client);
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn newline_framing() {
        let builder = Client::builder().framing(Framing::Newline);
        let (client, peer) = setup(builder, |mut peer| async move {
            let (request, raw) = peer.next_request().await.unwrap();
            assert_eq!(raw.last(), Some(&b'\n'));
            assert_eq!(raw.iter().filter(|&&b| b == b'\n').count(), 1);
            peer.answer(&request, json!({"echo": request.payload}))
                .await;
            let _ = peer.next_request().await;
        })
        .await;
        assert_eq!(client.framing(), Framing::Newline);
        let payload = json!({"text": "line\nbreak 🦀"});
        let result = client.request("echo", &payload).await.unwrap();
        assert_eq!(result, json!({ "echo": payload }));
        drop(client);
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn crabs_in_payloads_are_escaped_on_the_wire() {
        let (client, peer) = setup(Client::builder(), |mut peer| async move {
            let (request, raw) = peer.next_request().await.unwrap();
            // The only raw crab is the terminator.
            assert!(raw.ends_with(CRAB));
            assert!(memchr::memmem::find(&raw[..raw.len() - CRAB.len()], CRAB).is_none());
            peer.answer(&request, json!({"echo": request.payload}))
                .await;
            let _ = peer.next_request().await;
        })
        .await;
        let result = client.request("echo", "🦀\"🦀").await.unwrap();
        assert_eq!(result, json!({"echo": "🦀\"🦀"}));
        drop(client);
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn connect_failure_names_the_address() {
        // A port that was just free: bind, note it, release it.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let err = Client::connect(addr).await.unwrap_err();
        match err {
            ClientError::Connect { addr: named, .. } => assert_eq!(named, addr.to_string()),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_address_that_does_not_resolve_is_named_as_given() {
        let err = Client::connect("nohost.invalid:5").await.unwrap_err();
        match &err {
            ClientError::Connect { addr, .. } => assert_eq!(addr, "\"nohost.invalid:5\""),
            other => panic!("expected a connect error, got {other:?}"),
        }
        assert!(err
            .to_string()
            .starts_with("cannot connect to \"nohost.invalid:5\": "));
    }
}
