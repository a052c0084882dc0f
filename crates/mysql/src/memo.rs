//! [`WalletMemo`]: the wallets fenced units of this process wrote, by
//! fencing token, so that the next holder of the same lock acquisition
//! reads its wallet without a round trip.
//!
//! Under a lock, a hot wallet's critical section is: the hand-over to the
//! next holder, its `SELECT`, and the round trip that carries the checked
//! `UPDATE` with the history and outbox rows (see
//! [`crate::commit::DeferredWallet`]). The in-process key queue hands one
//! acquisition, with its fencing token, from one local holder to the next;
//! what the previous holder wrote under that token is exactly the row's
//! state once it commits (the compound `UPDATE` writes absolute values).
//! The memo keeps it from the moment it is written ([`UnitOfWork::write`],
//! or the commit), and a `find` under the same token answers from it: the
//! critical section loses its `SELECT`.
//!
//! Never trusted for a write: the next unit's `UPDATE` still checks the
//! version and the fence, and waits in InnoDB for the row while the unit
//! that wrote it has not ended. Anything that changed the row meanwhile
//! without the lock (another strategy's writer, another process's unit
//! whose lock was lost, an operator's SQL), or a unit that wrote and then
//! failed to commit, makes the version check fail, the memo entry is
//! forgotten, and the unit is run once more under the still-held lock
//! ([`concert_domain::Control::locked`]), reading afresh. A unit rolled
//! back after writing forgets its entry itself. Entries of a token that is
//! no longer held are simply never asked for (a new acquisition has a new
//! token).
//!
//! [`UnitOfWork::write`]: concert_domain::UnitOfWork::write

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use concert_domain::{UserId, Wallet};

/// Entries kept at most; beyond, the memo starts over (a miss costs one
/// `SELECT`).
const CAPACITY: usize = 4_096;

#[derive(Default)]
pub(crate) struct WalletMemo {
    by_user: Mutex<HashMap<u64, (Wallet, u64)>>,
}

impl WalletMemo {
    fn entries(&self) -> MutexGuard<'_, HashMap<u64, (Wallet, u64)>> {
        // Only inserts, removals and copies under the lock: a panic cannot
        // corrupt it.
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wallet written under fencing token `token`, if that was the
    /// last write of this process to it.
    pub(crate) fn get(&self, user: UserId, token: u64) -> Option<Wallet> {
        match self.entries().get(&user.get()) {
            Some((wallet, written)) if *written == token => Some(*wallet),
            _ => None,
        }
    }

    /// `wallet` was just written (or committed) under `token`.
    pub(crate) fn put(&self, wallet: Wallet, token: u64) {
        let mut entries = self.entries();
        if entries.len() >= CAPACITY && !entries.contains_key(&wallet.user.get()) {
            entries.clear();
        }
        entries.insert(wallet.user.get(), (wallet, token));
    }

    /// The wallet may have changed in a way the memo did not see.
    pub(crate) fn forget(&self, user: UserId) {
        self.entries().remove(&user.get());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wallet(user: u64, balance: u64, version: u64) -> Wallet {
        Wallet {
            user: UserId::from(user),
            balance,
            version,
        }
    }

    #[test]
    fn answers_only_for_the_token_that_wrote() {
        let memo = WalletMemo::default();
        let user = UserId::from(7);
        assert_eq!(memo.get(user, 1), None);
        memo.put(wallet(7, 500, 3), 1);
        assert_eq!(memo.get(user, 1), Some(wallet(7, 500, 3)));
        assert_eq!(memo.get(user, 2), None, "another acquisition reads");
        assert_eq!(memo.get(UserId::from(8), 1), None);
        memo.put(wallet(7, 400, 4), 2);
        assert_eq!(memo.get(user, 1), None);
        assert_eq!(memo.get(user, 2), Some(wallet(7, 400, 4)));
        memo.forget(user);
        assert_eq!(memo.get(user, 2), None);
    }

    #[test]
    fn stays_bounded() {
        let memo = WalletMemo::default();
        for user in 1..=(CAPACITY as u64 + 10) {
            memo.put(wallet(user, 1, 1), 9);
        }
        assert!(memo.entries().len() <= CAPACITY);
        assert_eq!(
            memo.get(UserId::from(CAPACITY as u64 + 10), 9),
            Some(wallet(CAPACITY as u64 + 10, 1, 1))
        );
    }
}
