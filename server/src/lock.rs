//! Card ownership: who has taken a card, and who waits for it, first come first served.
//!
//! A [`CardLock`] lives inside a card's entry in the registry and is only touched with the
//! registry's mutex held. A client that must wait gets a [`Waiting`] ticket and waits on it
//! with the mutex released; the holder's release starts a reset, and only when the reset is
//! done ([`CardLock::finish_reset`]) does the next waiter become the owner.

use std::collections::VecDeque;
use std::time::Duration;

use chipcard_ipc::{ClientId, ErrorCode};
use tokio::sync::oneshot;

/// How a wait ended: the card is ours, or it failed with a code.
pub type TakeResult = Result<(), ErrorCode>;

/// The owner and the queue of one card.
#[derive(Debug, Default)]
pub struct CardLock {
    owner: Option<ClientId>,
    resetting: bool,
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
}

#[derive(Debug)]
struct Waiter {
    client: ClientId,
    ticket: u64,
    wake: oneshot::Sender<TakeResult>,
}

/// The outcome of [`CardLock::take`].
#[derive(Debug)]
pub enum Take {
    /// The client owns the card now (or already did).
    Granted,
    /// Another client has it (or it is being reset) and the caller may not wait.
    Busy,
    /// The client is queued; wait on the ticket.
    Queued(Waiting),
}

/// A queued `TakeCard`, to be awaited without the registry's mutex.
#[derive(Debug)]
pub struct Waiting {
    /// The ticket, to leave the queue on timeout.
    pub ticket: u64,
    wake: oneshot::Receiver<TakeResult>,
}

impl Waiting {
    /// Waits up to `limit` for the card. On timeout, `on_timeout(ticket)` runs (it must take
    /// the registry's mutex and call [`CardLock::timed_out`]); its answer is the result, so a
    /// grant that races with the timeout is not lost.
    pub async fn wait(
        mut self,
        limit: Duration,
        on_timeout: impl FnOnce(u64) -> TakeResult,
    ) -> TakeResult {
        match tokio::time::timeout(limit, &mut self.wake).await {
            Ok(Ok(result)) => result,
            // The lock was dropped with us in it: the card is gone.
            Ok(Err(_)) => Err(ErrorCode::CardRemoved),
            Err(_) => match self.wake.try_recv() {
                Ok(result) => result,
                Err(_) => on_timeout(self.ticket),
            },
        }
    }
}

impl CardLock {
    /// The client holding the card.
    pub fn owner(&self) -> Option<ClientId> {
        self.owner
    }

    /// True when the card is taken or being reset for the next client.
    pub fn is_taken(&self) -> bool {
        self.owner.is_some() || self.resetting
    }

    /// `client` asks for the card; `may_wait` false means fail at once when it is busy.
    pub fn take(&mut self, client: ClientId, may_wait: bool) -> Take {
        if self.owner == Some(client) {
            return Take::Granted;
        }
        if !self.is_taken() && self.waiters.is_empty() {
            self.owner = Some(client);
            return Take::Granted;
        }
        if !may_wait {
            return Take::Busy;
        }
        let (wake, rx) = oneshot::channel();
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.waiters.push_back(Waiter {
            client,
            ticket,
            wake,
        });
        Take::Queued(Waiting { ticket, wake: rx })
    }

    /// A wait timed out: the client owns the card if it was granted meanwhile, else it leaves
    /// the queue and the answer is busy.
    pub fn timed_out(&mut self, client: ClientId, ticket: u64) -> TakeResult {
        if self.owner == Some(client) {
            return Ok(());
        }
        self.waiters.retain(|w| w.ticket != ticket);
        Err(ErrorCode::Busy)
    }

    /// The owner gives the card up: it stays unavailable until [`CardLock::finish_reset`].
    pub fn release(&mut self, client: ClientId) -> Result<(), ErrorCode> {
        if self.owner != Some(client) {
            return Err(ErrorCode::NotOwner);
        }
        self.owner = None;
        self.resetting = true;
        Ok(())
    }

    /// The reset after a release is done: the first waiter still waiting gets the card.
    pub fn finish_reset(&mut self) {
        self.resetting = false;
        while let Some(w) = self.waiters.pop_front() {
            if w.wake.send(Ok(())).is_ok() {
                let client = w.client;
                self.owner = Some(client);
                // The same client's other queued takes are answered too: it holds the card.
                let (same, others): (VecDeque<Waiter>, VecDeque<Waiter>) =
                    self.waiters.drain(..).partition(|w| w.client == client);
                self.waiters = others;
                for w in same {
                    let _ = w.wake.send(Ok(()));
                }
                return;
            }
        }
    }

    /// A client went away: it leaves the queue. True when it owned the card, which the
    /// caller then resets (the card is now in the resetting state).
    pub fn drop_client(&mut self, client: ClientId) -> bool {
        self.waiters.retain(|w| w.client != client);
        self.release(client).is_ok()
    }

    /// The card cannot be had any more: every waiter gets `code`.
    pub fn fail_all(&mut self, code: ErrorCode) {
        for w in self.waiters.drain(..) {
            let _ = w.wake.send(Err(code));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const A: ClientId = ClientId(1);
    const B: ClientId = ClientId(2);
    const C: ClientId = ClientId(3);

    fn queued(t: Take) -> Waiting {
        match t {
            Take::Queued(w) => w,
            other => panic!("expected a queue ticket, got {other:?}"),
        }
    }

    #[test]
    fn first_taker_wins_and_retaking_is_ok() {
        let mut l = CardLock::default();
        assert!(matches!(l.take(A, true), Take::Granted));
        assert!(matches!(l.take(A, true), Take::Granted));
        assert!(matches!(l.take(B, false), Take::Busy));
        assert_eq!(l.release(B), Err(ErrorCode::NotOwner));
        assert_eq!(l.owner(), Some(A));
    }

    #[test]
    fn nobody_gets_the_card_before_the_reset_is_done() {
        let mut l = CardLock::default();
        assert!(matches!(l.take(A, true), Take::Granted));
        assert_eq!(l.release(A), Ok(()));
        assert!(l.is_taken());
        assert!(matches!(l.take(B, false), Take::Busy));
        l.finish_reset();
        assert!(!l.is_taken());
        assert!(matches!(l.take(B, false), Take::Granted));
    }

    #[tokio::test]
    async fn waiters_are_served_in_order() {
        let lock = Arc::new(Mutex::new(CardLock::default()));
        let wb;
        let wc;
        {
            let mut l = lock.lock().expect("not poisoned");
            assert!(matches!(l.take(A, true), Take::Granted));
            wb = queued(l.take(B, true));
            wc = queued(l.take(C, true));
            assert_eq!(l.release(A), Ok(()));
            l.finish_reset();
            assert_eq!(l.owner(), Some(B));
        }
        let never = |_: u64| -> TakeResult { panic!("no timeout expected") };
        assert_eq!(wb.wait(Duration::from_secs(5), never).await, Ok(()));
        let l2 = lock.clone();
        let waiter = tokio::spawn(async move {
            wc.wait(Duration::from_secs(5), |t| {
                l2.lock().expect("not poisoned").timed_out(C, t)
            })
            .await
        });
        {
            let mut l = lock.lock().expect("not poisoned");
            assert_eq!(l.release(B), Ok(()));
            l.finish_reset();
        }
        assert_eq!(waiter.await.expect("joins"), Ok(()));
        assert_eq!(lock.lock().expect("not poisoned").owner(), Some(C));
    }

    #[tokio::test]
    async fn a_wait_times_out_busy_and_leaves_the_queue() {
        let lock = Arc::new(Mutex::new(CardLock::default()));
        let wb = {
            let mut l = lock.lock().expect("not poisoned");
            assert!(matches!(l.take(A, true), Take::Granted));
            queued(l.take(B, true))
        };
        let l2 = lock.clone();
        let started = std::time::Instant::now();
        let result = wb
            .wait(Duration::from_millis(50), |t| {
                l2.lock().expect("not poisoned").timed_out(B, t)
            })
            .await;
        assert_eq!(result, Err(ErrorCode::Busy));
        assert!(started.elapsed() >= Duration::from_millis(50));
        let mut l = lock.lock().expect("not poisoned");
        assert_eq!(l.release(A), Ok(()));
        l.finish_reset();
        assert_eq!(l.owner(), None, "the timed-out waiter was not served");
    }

    #[tokio::test]
    async fn removal_and_disconnect_end_waits() {
        let mut l = CardLock::default();
        assert!(matches!(l.take(A, true), Take::Granted));
        let wb = queued(l.take(B, true));
        let wc = queued(l.take(C, true));
        assert!(!l.drop_client(C));
        l.fail_all(ErrorCode::CardRemoved);
        let never = |_: u64| -> TakeResult { panic!("no timeout expected") };
        assert_eq!(
            wb.wait(Duration::from_secs(5), never).await,
            Err(ErrorCode::CardRemoved)
        );
        assert_eq!(
            wc.wait(Duration::from_secs(5), never).await,
            Err(ErrorCode::CardRemoved)
        );
        assert!(l.drop_client(A));
        assert!(l.is_taken(), "a disconnected owner's card is reset first");
    }

    #[test]
    fn a_client_queued_twice_is_served_once_for_both() {
        let mut l = CardLock::default();
        assert!(matches!(l.take(A, true), Take::Granted));
        let _w1 = queued(l.take(B, true));
        let _w2 = queued(l.take(B, true));
        let _w3 = queued(l.take(C, true));
        assert_eq!(l.release(A), Ok(()));
        l.finish_reset();
        assert_eq!(l.owner(), Some(B));
        assert_eq!(l.waiters.len(), 1);
    }
}
