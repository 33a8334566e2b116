//! The request a plugin call serves, as the host API sees it. The host functions (WASM
//! imports and the native table's `call`) run on the thread that called the plugin and find
//! here whose request it is (the lease holder, the store namespace, the deadline a waiting
//! acquire must respect) and record the journal seq the answer must wait for.
//!
//! A native lane's executor, on a blocking thread, [`enter`]s a [`Call`] for its batch and
//! [`Scope::begin`]s each request in it. A WASM lane's executor is a task whose calls may be
//! polled on any worker thread, so it keeps its `Call` and lends it to the thread only while
//! it polls a call ([`within`]).

use super::Pools;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// One plugin call's view of the host.
pub(crate) struct Call {
    pub(crate) pools: Arc<Pools>,
    /// The requesting connection: the holder of what it acquires.
    pub(crate) client: u64,
    /// The plugin's store namespace.
    pub(crate) namespace: Arc<str>,
    /// When the call's deadline passes; waiting acquires end before it.
    pub(crate) deadline: Instant,
    /// The highest journal seq this call changed or read: its answer waits for it.
    pub(crate) seq: u64,
}

impl Call {
    /// A call of the plugin whose store namespace is `namespace`, serving no one yet.
    pub(crate) fn new(pools: Arc<Pools>, namespace: Arc<str>) -> Call {
        Call {
            pools,
            client: 0,
            namespace,
            deadline: Instant::now(),
            seq: 0,
        }
    }

    /// Starts serving `client`'s request, due by `deadline`.
    pub(crate) fn begin(&mut self, client: u64, deadline: Instant) {
        self.client = client;
        self.deadline = deadline;
        self.seq = 0;
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Call>> = const { RefCell::new(None) };
}

/// The call entered on this thread; dropping it clears it.
pub(crate) struct Scope(());

impl Scope {
    /// Starts serving `client`'s request, due by `deadline`.
    pub(crate) fn begin(&self, client: u64, deadline: Instant) {
        with(|call| call.begin(client, deadline));
    }

    /// The journal seq the request begun last must wait for before its answer leaves.
    pub(crate) fn seq(&self) -> u64 {
        with(|call| call.seq).unwrap_or(0)
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with_borrow_mut(|current| *current = None);
    }
}

/// Enters calls of the plugin whose store namespace is `namespace` on this thread.
pub(crate) fn enter(pools: Arc<Pools>, namespace: Arc<str>) -> Scope {
    let call = Call::new(pools, namespace);
    CURRENT.with_borrow_mut(|current| *current = Some(call));
    Scope(())
}

/// Runs `f` on this thread's call, or answers `None` outside one (a plugin calling the host
/// API from its constructor, say).
pub(crate) fn with<R>(f: impl FnOnce(&mut Call) -> R) -> Option<R> {
    CURRENT.with_borrow_mut(|current| current.as_mut().map(f))
}

/// A call a task keeps between polls of its plugin calls and lends to the polling thread
/// while it polls one ([`within`]).
pub(crate) struct Kept(Option<Call>);

impl Kept {
    pub(crate) fn new(pools: Arc<Pools>, namespace: Arc<str>) -> Kept {
        Kept(Some(Call::new(pools, namespace)))
    }

    /// Starts serving `client`'s request, due by `deadline`.
    pub(crate) fn begin(&mut self, client: u64, deadline: Instant) {
        self.call().begin(client, deadline);
    }

    /// The journal seq the request begun last must wait for before its answer leaves.
    pub(crate) fn seq(&mut self) -> u64 {
        self.call().seq
    }

    fn call(&mut self) -> &mut Call {
        self.0
            .as_mut()
            .expect("a kept call is back once its poll returned")
    }
}

/// Polls `future` with `kept`'s call entered on the polling thread, and only while it polls.
pub(crate) fn within<F: Future>(kept: &mut Kept, future: F) -> Within<'_, F> {
    Within { kept, future }
}

pin_project_lite::pin_project! {
    /// The future of [`within`].
    pub(crate) struct Within<'a, F> {
        kept: &'a mut Kept,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _lent = Lent::lend(this.kept);
        this.future.poll(cx)
    }
}

/// A call lent to this thread; handed back on drop, unwinding included.
struct Lent<'a> {
    kept: &'a mut Kept,
}

impl<'a> Lent<'a> {
    fn lend(kept: &'a mut Kept) -> Lent<'a> {
        CURRENT.with_borrow_mut(|current| std::mem::swap(current, &mut kept.0));
        Lent { kept }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        CURRENT.with_borrow_mut(|current| std::mem::swap(current, &mut self.kept.0));
    }
}
