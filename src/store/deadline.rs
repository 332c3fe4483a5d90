//! Deadlines of Redis commands kept by one watchdog thread per store,
//! instead of a timer per command.
//!
//! A hit is one `HGET`. Giving it fred's per-command timeout arms a tokio
//! timer and disarms it when the reply comes: about 1,150 instructions of
//! the ~30,000 a hit costs. Here a waiting command puts its deadline and
//! waker into a shared slab (one short lock) and takes them out when it
//! ends (another): about 300 instructions.
//!
//! The watchdog is a thread of its own, started when the first command
//! waits. It sleeps until the earliest deadline of the commands that wait
//! (or until something waits, when nothing does), wakes the commands whose
//! deadline has passed, and they end as late. A command whose deadline is
//! earlier than the watchdog's next look wakes it; with one bound per
//! store, deadlines come in the order commands start, so that happens when
//! the store goes from idle to busy, not on every call. Under a steady load
//! the watchdog wakes about once per bound.
//!
//! A thread, not a task: a task lives on the runtime that spawned it, and
//! a runtime that is no longer driven (one that only ran the app's set-up)
//! would hold it, leaving every other runtime's commands without their
//! deadline. The thread ends when its store is dropped.
//!
//! Where the thread cannot be started, [`Deadlines::running`] says so and
//! the caller keeps using a timer per command.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
#[cfg(test)]
use std::thread::JoinHandle;
use std::thread::Thread;
use std::time::Instant;

use slab::Slab;

/// The deadlines of one store's waiting commands, and their watchdog.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    shared: Arc<Shared>,
}

/// A watched future's deadline passed before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// [`Shared::watchdog`]: not started yet.
const NOT_STARTED: u8 = 0;
/// [`Shared::watchdog`]: the thread runs.
const RUNNING: u8 = 1;
/// [`Shared::watchdog`]: the thread could not be started.
const FAILED: u8 = 2;

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// [`NOT_STARTED`], [`RUNNING`] or [`FAILED`]: read without the lock on
    /// every call.
    watchdog: AtomicU8,
}

#[derive(Debug, Default)]
struct State {
    waiting: Slab<Waiting>,
    /// When the watchdog looks next; `None` while it sleeps until woken.
    next: Option<Instant>,
    /// The watchdog thread, once started.
    thread: Option<Thread>,
    /// Its handle, for the test that sees it end.
    #[cfg(test)]
    handle: Option<JoinHandle<()>>,
    /// How many times the watchdog has looked, and how many futures it
    /// left waiting (not expired) the last time: tests wait for it to be
    /// asleep.
    #[cfg(test)]
    looks: (u64, usize),
}

#[derive(Debug)]
struct Waiting {
    at: Instant,
    waker: Waker,
    expired: bool,
}

impl Deadlines {
    /// Whether a watchdog keeps deadlines, starting it if none runs yet;
    /// `false` when its thread cannot be started (the caller then bounds
    /// its command with a timer of its own).
    pub(crate) fn running(&self) -> bool {
        match self.shared.watchdog.load(Ordering::Acquire) {
            RUNNING => true,
            NOT_STARTED => self.shared.start(),
            _ => false,
        }
    }

    /// `future`, ended with [`Elapsed`] if it has not finished by `at`.
    ///
    /// Only kept while [`Deadlines::running`]: call that first.
    pub(crate) fn watch<F: Future + Unpin>(&self, future: F, at: Instant) -> Watched<'_, F> {
        Watched {
            future,
            shared: self.shared.as_ref(),
            at,
            slot: None,
        }
    }

    /// How many futures wait now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shared.lock().waiting.len()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that holds the lock can panic; a poisoned lock still
        // holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the watchdog thread (once); whether it runs.
    fn start(self: &Arc<Self>) -> bool {
        let mut state = self.lock();
        let now = self.watchdog.load(Ordering::Acquire);
        if now != NOT_STARTED {
            return now == RUNNING;
        }
        let shared = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("tca-deadlines".to_owned())
            .spawn(move || watchdog(shared));
        match spawned {
            Ok(handle) => {
                state.thread = Some(handle.thread().clone());
                #[cfg(test)]
                {
                    state.handle = Some(handle);
                }
                self.watchdog.store(RUNNING, Ordering::Release);
                true
            }
            Err(error) => {
                tracing::warn!(
                    target: "tower_cache_aside",
                    %error,
                    "cannot start the deadline watchdog; each Redis command gets a timer of its own"
                );
                self.watchdog.store(FAILED, Ordering::Release);
                false
            }
        }
    }

    /// Marks the waiting futures whose deadline is at or before `now` as
    /// expired, gives their wakers, and sets (and returns) when the
    /// watchdog looks next: the earliest deadline of the others.
    fn expire(&self, now: Instant) -> (Vec<Waker>, Option<Instant>) {
        let mut state = self.lock();
        let mut wakers = Vec::new();
        let mut next: Option<Instant> = None;
        for (_, waiting) in state.waiting.iter_mut() {
            if waiting.expired {
                continue;
            }
            if waiting.at <= now {
                waiting.expired = true;
                wakers.push(waiting.waker.clone());
            } else if next.map_or(true, |next| waiting.at < next) {
                next = Some(waiting.at);
            }
        }
        state.next = next;
        #[cfg(test)]
        {
            let unexpired = state.waiting.iter().filter(|(_, w)| !w.expired).count();
            state.looks = (state.looks.0 + 1, unexpired);
        }
        (wakers, next)
    }

    /// Wakes the watchdog thread.
    fn unpark(state: &State) {
        if let Some(thread) = &state.thread {
            thread.unpark();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The watchdog wakes, finds its store gone, and ends. Not joined:
        // this may run on the watchdog thread itself.
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        Shared::unpark(state);
    }
}

/// The watchdog thread: wakes the futures whose deadline passed, sleeps
/// until the next deadline (or until woken), ends with the store.
fn watchdog(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let (wakers, next) = strong.expire(Instant::now());
        drop(strong);
        wakers.into_iter().for_each(Waker::wake);
        // An unpark that came after `expire` (a new, earlier deadline, or
        // the store going) makes the park return at once: nothing is lost.
        match next {
            Some(next) => std::thread::park_timeout(next.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}

/// A future with a deadline a [`Deadlines`] watchdog keeps.
#[derive(Debug)]
pub(crate) struct Watched<'a, F> {
    future: F,
    shared: &'a Shared,
    at: Instant,
    /// Its place in the slab while it waits.
    slot: Option<usize>,
}

impl<F: Future + Unpin> Future for Watched<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(output) = Pin::new(&mut this.future).poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let mut state = this.shared.lock();
        match this.slot.and_then(|slot| state.waiting.get_mut(slot)) {
            Some(waiting) if waiting.expired => return Poll::Ready(Err(Elapsed)),
            Some(waiting) => {
                if !waiting.waker.will_wake(cx.waker()) {
                    waiting.waker = cx.waker().clone();
                }
            }
            None => {
                this.slot = Some(state.waiting.insert(Waiting {
                    at: this.at,
                    waker: cx.waker().clone(),
                    expired: false,
                }));
                if state.next.map_or(true, |next| this.at < next) {
                    // The watchdog would look too late: it looks at this
                    // deadline instead.
                    state.next = Some(this.at);
                    Shared::unpark(&state);
                }
            }
        }
        Poll::Pending
    }
}

impl<F> Drop for Watched<'_, F> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let _ = self.shared.lock().waiting.try_remove(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pending() -> Pin<Box<std::future::Pending<()>>> {
        Box::pin(std::future::pending())
    }

    /// Deadlines whose watchdog has looked once and found nothing: it is
    /// asleep until something wakes it.
    fn started() -> Deadlines {
        let deadlines = Deadlines::default();
        assert!(deadlines.running(), "the watchdog thread starts");
        asleep_seeing(&deadlines, 0);
        deadlines
    }

    /// Waits until the watchdog's last look left `waiting` futures waiting
    /// (it then sleeps, or is about to: a wake-up from now on is not lost).
    fn asleep_seeing(deadlines: &Deadlines, waiting: usize) {
        let start = Instant::now();
        loop {
            let (looks, seen) = deadlines.shared.lock().looks;
            if looks > 0 && seen == waiting {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the watchdog never looked"
            );
            std::thread::yield_now();
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    /// A runtime of its own on which one future waited out its deadline;
    /// returned once the watchdog sleeps again.
    fn one_wait_on_a_runtime(deadlines: &Deadlines) -> tokio::runtime::Runtime {
        let runtime = runtime();
        let at = Instant::now() + Duration::from_millis(5);
        assert_eq!(
            runtime.block_on(within_30s(deadlines.watch(pending(), at))),
            Err(Elapsed)
        );
        asleep_seeing(deadlines, 0);
        runtime
    }

    /// `watched`, failing the test rather than hanging if the watchdog
    /// never ends it.
    async fn within_30s<F: Future>(watched: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(30), watched)
            .await
            .expect("the watchdog did not end the future")
    }

    #[tokio::test]
    async fn a_future_that_does_not_finish_ends_at_its_deadline_and_leaves_no_trace() {
        let deadlines = started();
        let at = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            within_30s(deadlines.watch(pending(), at)).await,
            Err(Elapsed)
        );
        assert!(Instant::now() >= at, "ended before its deadline");
        assert_eq!(deadlines.waiting(), 0);
    }

    #[tokio::test]
    async fn a_future_that_finishes_in_time_keeps_its_output_and_leaves_no_trace() {
        let deadlines = started();
        let at = Instant::now() + Duration::from_secs(60);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let watched = deadlines.watch(rx, at);
        let sender = tokio::spawn(async move { tx.send(7) });
        assert_eq!(watched.await, Ok(Ok(7)));
        assert!(sender.await.is_ok());
        assert_eq!(deadlines.waiting(), 0);
        // A future ready at once never waits.
        let ready = deadlines.watch(std::future::ready(1), at);
        assert_eq!(ready.await, Ok(1));
    }

    #[tokio::test]
    async fn a_dropped_future_leaves_the_slab() {
        let deadlines = started();
        let mut watched = deadlines.watch(pending(), Instant::now() + Duration::from_secs(60));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut watched).poll(&mut cx).is_pending());
        assert_eq!(deadlines.waiting(), 1);
        drop(watched);
        assert_eq!(deadlines.waiting(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_futures_end_each_at_its_own_deadline() {
        let deadlines = Arc::new(started());
        let start = Instant::now();
        let mut tasks = Vec::new();
        // Later deadlines first, then earlier ones: each earlier one must
        // bring the watchdog's next look forward.
        for i in (0..64u64).rev() {
            let deadlines = deadlines.clone();
            let at = start + Duration::from_millis(5 + i % 16);
            tasks.push(tokio::spawn(async move {
                let result = within_30s(deadlines.watch(pending(), at)).await;
                (result, Instant::now() >= at)
            }));
        }
        // One that finishes in time among them.
        let finished = deadlines.watch(Box::pin(async { 3 }), start + Duration::from_millis(5));
        assert_eq!(finished.await, Ok(3));
        for task in tasks {
            assert_eq!(task.await.ok(), Some((Err(Elapsed), true)));
        }
        assert_eq!(deadlines.waiting(), 0);
    }

    #[tokio::test]
    async fn an_earlier_deadline_wakes_a_watchdog_that_sleeps_until_a_later_one() {
        let deadlines = started();
        let far = Instant::now() + Duration::from_secs(3600);
        let mut far_future = deadlines.watch(pending(), far);
        let waker = futures_util::task::noop_waker();
        assert!(Pin::new(&mut far_future)
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        // Once the watchdog sleeps for an hour, this one must wake it.
        asleep_seeing(&deadlines, 1);
        let near = Instant::now() + Duration::from_millis(10);
        assert_eq!(
            within_30s(deadlines.watch(pending(), near)).await,
            Err(Elapsed)
        );
        assert_eq!(deadlines.waiting(), 1, "the far one still waits");
    }

    #[test]
    fn deadlines_are_kept_whatever_runtime_first_waited() {
        let deadlines = Arc::new(started());
        // A runtime that waits once, then is kept but never driven again
        // (one that only ran an app's set-up).
        let setup = one_wait_on_a_runtime(&deadlines);
        // Another thread's runtime still has its deadlines kept.
        let other = deadlines.clone();
        let ended = std::thread::spawn(move || {
            runtime().block_on(async {
                let at = Instant::now() + Duration::from_millis(10);
                tokio::time::timeout(Duration::from_secs(30), other.watch(pending(), at)).await
            })
        })
        .join();
        assert_eq!(ended.ok(), Some(Ok(Err(Elapsed))));
        drop(setup);
    }

    #[test]
    fn the_watchdog_ends_with_its_store() {
        let deadlines = started();
        let _runtime = one_wait_on_a_runtime(&deadlines);
        let thread = deadlines.shared.lock().handle.take();
        let thread = thread.expect("the watchdog thread");
        // Dropping the store wakes the sleeping watchdog, which ends.
        drop(deadlines);
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(thread.join().is_ok()));
        assert_eq!(ended.recv_timeout(Duration::from_secs(30)), Ok(true));
    }
}
