//! The request a plugin call serves, as the host API sees it. The executor enters a [`Call`]
//! on its thread for a batch of its lane and [`Scope::begin`]s each request in it; the host
//! functions (WASM imports and the native
//! table's `call`) run on that same thread, synchronously, and find here whose request it is
//! (the lease holder, the store namespace, the deadline a waiting acquire must respect) and
//! record the journal seq the answer must wait for.

use super::Pools;
use std::cell::RefCell;
use std::sync::Arc;
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

thread_local! {
    static CURRENT: RefCell<Option<Call>> = const { RefCell::new(None) };
}

/// The call entered on this thread; dropping it clears it.
pub(crate) struct Scope(());

impl Scope {
    /// Starts serving `client`'s request, due by `deadline`.
    pub(crate) fn begin(&self, client: u64, deadline: Instant) {
        with(|call| {
            call.client = client;
            call.deadline = deadline;
            call.seq = 0;
        });
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
    let call = Call {
        pools,
        client: 0,
        namespace,
        deadline: Instant::now(),
        seq: 0,
    };
    CURRENT.with_borrow_mut(|current| *current = Some(call));
    Scope(())
}

/// Runs `f` on this thread's call, or answers `None` outside one (a plugin calling the host
/// API from its constructor, say).
pub(crate) fn with<R>(f: impl FnOnce(&mut Call) -> R) -> Option<R> {
    CURRENT.with_borrow_mut(|current| current.as_mut().map(f))
}
