//! Point balance, history, charge and use; and the wallet change every
//! point-moving use case shares.

use chrono::{DateTime, Utc};

use crate::control::{Control, Operation, Protection};
use crate::error::{ChargeError, Failure, QueryError, UseError};
use crate::events::Event;
use crate::ids::UserId;
use crate::lock::LockKey;
use crate::model::commands::{ChargePoints, UsePoints};
use crate::model::wallet::{
    HistoryEntry, NewHistoryEntry, PointBalance, PointChange, PointRule, Wallet,
};
use crate::ports::{Claim, KeyScope, Stored, UnitOfWork};
use crate::services::{Ports, finish};

#[derive(Clone)]
pub struct PointService {
    ports: Ports,
    charge: Control,
    spend: Control,
}

impl PointService {
    /// `charge` controls top-ups, `spend` controls uses.
    pub fn new(ports: Ports, charge: Control, spend: Control) -> Self {
        Self {
            ports,
            charge,
            spend,
        }
    }

    /// The balance; 0 for a user never charged.
    #[tracing::instrument(skip(self))]
    pub async fn balance(&self, user: UserId) -> Result<PointBalance, QueryError> {
        let wallet = self.ports.queries.wallet(user).await?;
        Ok(wallet.unwrap_or_else(|| Wallet::empty(user)).balance())
    }

    /// Every change, newest first.
    #[tracing::instrument(skip(self))]
    pub async fn history(&self, user: UserId) -> Result<Vec<HistoryEntry>, QueryError> {
        Ok(self.ports.queries.history(user).await?)
    }

    /// Tops the balance up, never above the maximum balance. With an
    /// idempotency key, a repeat answers the first balance and changes
    /// nothing; the key reused for another amount is refused.
    #[tracing::instrument(skip(self), fields(strategy = self.charge.name()))]
    pub async fn charge(&self, cmd: ChargePoints) -> Result<PointBalance, ChargeError> {
        let keys = [LockKey::wallet(cmd.user)];
        self.charge
            .run(
                Operation::Charge,
                &keys,
                self.ports.clock.as_ref(),
                |protection| self.charge_once(&cmd, protection),
            )
            .await
    }

    async fn charge_once(
        &self,
        cmd: &ChargePoints,
        protection: Protection,
    ) -> Result<PointBalance, ChargeError> {
        let now = self.ports.clock.now();
        let atomic = matches!(protection, Protection::Atomic);
        let mut uow = self.ports.transactions.begin(protection.clone()).await?;
        let outcome = async {
            if let Some(key) = &cmd.idempotency {
                let request = format!("amount={}", cmd.amount);
                match uow
                    .idempotency()
                    .claim(cmd.user, KeyScope::Charge, key, &request)
                    .await?
                {
                    Claim::New => {}
                    Claim::Done(Stored::Balance(balance)) => {
                        return Ok(PointBalance {
                            user: cmd.user,
                            balance,
                        });
                    }
                    Claim::Done(Stored::Payment(_)) | Claim::Mismatch => {
                        return Err(ChargeError::KeyReused);
                    }
                }
            }
            let change = PointChange::Charge(cmd.amount);
            let balance = change_balance(&mut *uow, cmd.user, change, now, atomic)
                .await?
                .map_err(|rule| match rule {
                    PointRule::BalanceLimit {
                        balance,
                        amount,
                        max,
                    } => ChargeError::BalanceLimit {
                        balance,
                        amount,
                        max,
                    },
                    other => {
                        Failure::unknown(anyhow::anyhow!("a charge was refused: {other}")).into()
                    }
                })?;
            if let Some(key) = &cmd.idempotency {
                uow.idempotency()
                    .complete(cmd.user, KeyScope::Charge, key, Stored::Balance(balance))
                    .await?;
            }
            uow.outbox()
                .record(&[Event::points(cmd.user, change, balance, None, now)])
                .await?;
            Ok(PointBalance {
                user: cmd.user,
                balance,
            })
        }
        .await;
        finish(uow, &protection, outcome).await
    }

    /// Takes points from the balance, never below zero.
    #[tracing::instrument(skip(self), fields(strategy = self.spend.name()))]
    pub async fn use_points(&self, cmd: UsePoints) -> Result<PointBalance, UseError> {
        let keys = [LockKey::wallet(cmd.user)];
        self.spend
            .run(
                Operation::UsePoints,
                &keys,
                self.ports.clock.as_ref(),
                |protection| self.use_once(cmd, protection),
            )
            .await
    }

    async fn use_once(
        &self,
        cmd: UsePoints,
        protection: Protection,
    ) -> Result<PointBalance, UseError> {
        let now = self.ports.clock.now();
        let atomic = matches!(protection, Protection::Atomic);
        let mut uow = self.ports.transactions.begin(protection.clone()).await?;
        let outcome = async {
            let change = PointChange::Use(cmd.amount);
            let balance = change_balance(&mut *uow, cmd.user, change, now, atomic)
                .await?
                .map_err(insufficient)?;
            uow.outbox()
                .record(&[Event::points(cmd.user, change, balance, None, now)])
                .await?;
            Ok(PointBalance {
                user: cmd.user,
                balance,
            })
        }
        .await;
        finish(uow, &protection, outcome).await
    }
}

fn insufficient(rule: PointRule) -> UseError {
    match rule {
        PointRule::Insufficient { balance, needed } => {
            UseError::InsufficientPoints { balance, needed }
        }
        other => Failure::unknown(anyhow::anyhow!("a use was refused: {other}")).into(),
    }
}

/// Applies `change` to `user`'s wallet inside `uow` and appends its history
/// line; returns the balance after, or the rule that refused it (nothing
/// written then). A charge or refund creates a missing wallet; a use of a
/// missing wallet is refused like a use of an empty one.
///
/// Under [`Protection::Atomic`] (`atomic`) the write is one conditional
/// write; when it does not apply, a read tells why: the rule refuses, or the
/// balance changed between the two statements and the write is tried again
/// (at most three times, then a conflict). Otherwise: read (locked when
/// pessimistic), [`Wallet::apply`], write back under the version read.
pub(crate) async fn change_balance(
    uow: &mut dyn UnitOfWork,
    user: UserId,
    change: PointChange,
    at: DateTime<Utc>,
    atomic: bool,
) -> Result<Result<u64, PointRule>, Failure> {
    let creates = !matches!(change, PointChange::Use(_));
    if atomic {
        for _ in 0..3 {
            if let Some(balance) = uow.wallets().change_atomically(user, change, at).await? {
                return Ok(Ok(balance));
            }
            match uow.wallets().find(user).await? {
                None if creates => uow.wallets().create(user).await?,
                None => return Ok(Wallet::empty(user).apply(change).map(|w| w.balance)),
                Some(wallet) => {
                    if let Err(rule) = wallet.apply(change) {
                        return Ok(Err(rule));
                    }
                    // It would pass now: the balance moved in between.
                }
            }
        }
        return Err(Failure::Conflict);
    }
    let wallet = match uow.wallets().find(user).await? {
        Some(wallet) => wallet,
        None if creates => {
            uow.wallets().create(user).await?;
            uow.wallets().find(user).await?.ok_or_else(|| {
                Failure::unknown(anyhow::anyhow!("the wallet of user {user} was not created"))
            })?
        }
        None => Wallet::empty(user),
    };
    let next = match wallet.apply(change) {
        Ok(next) => next,
        Err(rule) => return Ok(Err(rule)),
    };
    // The wallet is the contended row and the last one the unit writes:
    // written with the commit, in the same step.
    uow.wallets().save_at_commit(&next).await?;
    uow.wallets()
        .append(&NewHistoryEntry {
            user,
            change,
            balance_after: next.balance,
            at,
        })
        .await?;
    Ok(Ok(next.balance))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::control::RetryPolicy;
    use crate::events::EventType;
    use crate::ids::IdempotencyKey;
    use crate::lock::{LockOptions, MockDistributedLock};
    use crate::memory::MemoryStore;
    use crate::model::wallet::Points;
    use crate::model::wallet::{MAX_BALANCE, PointKind};
    use crate::services::Policy;
    use crate::services::Services;
    use crate::services::testing::{Log, logged_services, services};

    fn user() -> UserId {
        UserId::from(3)
    }

    fn pts(v: i64) -> Points {
        Points::new(v).unwrap()
    }

    fn controls() -> Vec<Control> {
        let lock = Arc::new(MockDistributedLock::granting(1, Arc::default()));
        vec![
            Control::optimistic("optimistic"),
            Control::pessimistic("pessimistic"),
            Control::atomic("atomic"),
            Control::retrying("optimistic-retry", RetryPolicy::default()),
            Control::locked("local", lock, LockOptions::default()),
        ]
    }

    fn charge(amount: i64, key: Option<&str>) -> ChargePoints {
        ChargePoints {
            user: user(),
            amount: pts(amount),
            idempotency: key.map(|k| IdempotencyKey::new(k).unwrap()),
        }
    }

    #[tokio::test]
    async fn charges_and_uses_move_the_balance_with_history_and_events() {
        for control in controls() {
            let name = control.name().to_owned();
            let (svc, store, _) = services(control, Policy::default());
            assert_eq!(svc.points.balance(user()).await.unwrap().balance, 0);
            let b = svc.points.charge(charge(1_000, None)).await.unwrap();
            assert_eq!(b.balance, 1_000, "{name}");
            let b = svc
                .points
                .use_points(UsePoints {
                    user: user(),
                    amount: pts(300),
                })
                .await
                .unwrap();
            assert_eq!(b.balance, 700, "{name}");
            let history = svc.points.history(user()).await.unwrap();
            let lines: Vec<_> = history
                .iter()
                .map(|h| (h.kind, h.amount, h.balance_after))
                .collect();
            assert_eq!(
                lines,
                [
                    (PointKind::Use, 300, 700),
                    (PointKind::Charge, 1_000, 1_000)
                ],
                "{name}"
            );
            let events: Vec<_> = store
                .events()
                .iter()
                .map(|e| (e.kind, e.payload.balance_after))
                .collect();
            assert_eq!(
                events,
                [
                    (EventType::PointsCharged, Some(1_000)),
                    (EventType::PointsUsed, Some(700))
                ],
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn refusals_change_nothing() {
        for control in controls() {
            let name = control.name().to_owned();
            let (svc, store, _) = services(control, Policy::default());
            let out = svc
                .points
                .use_points(UsePoints {
                    user: user(),
                    amount: pts(1),
                })
                .await;
            assert!(
                matches!(
                    out,
                    Err(UseError::InsufficientPoints {
                        balance: 0,
                        needed: 1
                    })
                ),
                "{name}: {out:?}"
            );
            store.set_balance(user(), MAX_BALANCE - 5);
            let out = svc.points.charge(charge(6, None)).await;
            assert!(
                matches!(out, Err(ChargeError::BalanceLimit { amount: 6, .. })),
                "{name}: {out:?}"
            );
            assert_eq!(store.balance(user()), MAX_BALANCE - 5, "{name}");
            assert!(store.events().is_empty(), "{name}");
            assert!(store.history_of(user()).is_empty(), "{name}");
        }
    }

    #[tokio::test]
    async fn a_charge_key_answers_repeats_and_refuses_another_amount() {
        for control in controls() {
            let name = control.name().to_owned();
            let (svc, store, _) = services(control, Policy::default());
            let first = svc.points.charge(charge(500, Some("k1"))).await.unwrap();
            let again = svc.points.charge(charge(500, Some("k1"))).await.unwrap();
            assert_eq!((first.balance, again.balance), (500, 500), "{name}");
            assert!(
                matches!(
                    svc.points.charge(charge(999, Some("k1"))).await,
                    Err(ChargeError::KeyReused)
                ),
                "{name}"
            );
            let other = svc.points.charge(charge(500, Some("k2"))).await.unwrap();
            assert_eq!(other.balance, 1_000, "{name}");
            assert_eq!(store.history_of(user()).len(), 2, "{name}");
            assert_eq!(store.events().len(), 2, "{name}");
        }
    }

    #[tokio::test]
    async fn a_failed_commit_writes_nothing_and_frees_the_key() {
        let (svc, store, _) = services(Control::pessimistic("pessimistic"), Policy::default());
        store.fail_next_commit(Failure::unavailable(anyhow::anyhow!("db went away")));
        assert!(matches!(
            svc.points.charge(charge(500, Some("k"))).await,
            Err(ChargeError::Failed(Failure::Unavailable(_)))
        ));
        assert_eq!(store.balance(user()), 0);
        let b = svc.points.charge(charge(500, Some("k"))).await.unwrap();
        assert_eq!(b.balance, 500);
    }

    fn use_300() -> UsePoints {
        UsePoints {
            user: user(),
            amount: pts(300),
        }
    }

    /// The services under a mock lock whose acquisitions answer
    /// `waited_for_here`, locks and units of work logging to one log; the
    /// user's balance set to `balance`.
    fn under_logged_lock(waited_for_here: bool, balance: u64) -> (Services, MemoryStore, Log) {
        let log = Log::default();
        let lock = MockDistributedLock::granting_contended(1, log.clone(), waited_for_here);
        let control = Control::locked("local", Arc::new(lock), LockOptions::default());
        let (svc, store) = logged_services(control, log.clone());
        store.set_balance(user(), balance);
        (svc, store, log)
    }

    /// Under a lock another request of this process waits for, a use's
    /// writes are applied, the lock is passed on to that request, the unit
    /// is committed, and only then is the lock service's lock released;
    /// under a lock nobody waits for here, the unit commits first and
    /// releases after (one round trip fewer).
    #[tokio::test]
    async fn a_lock_waited_for_here_is_handed_over_between_the_writes_and_the_commit() {
        for (waited_for_here, expected) in [
            (
                true,
                vec![
                    "acquire wallet:3",
                    "write",
                    "pass wallet:3",
                    "commit",
                    "release wallet:3",
                ],
            ),
            (
                false,
                vec!["acquire wallet:3", "commit", "release wallet:3"],
            ),
        ] {
            let (svc, store, log) = under_logged_lock(waited_for_here, 1_000);
            let b = svc.points.use_points(use_300()).await.unwrap();
            assert_eq!(b.balance, 700);
            assert_eq!(store.balance(user()), 700);
            assert_eq!(store.history_of(user()).len(), 1);
            assert_eq!(*log.lock().unwrap(), expected, "{waited_for_here}");
        }
    }

    /// A write refused before the hand-over (here a conflict) rolls the
    /// unit back and keeps the lock: the use runs once more under it, and
    /// only its successful writes pass the lock on.
    #[tokio::test]
    async fn a_refused_write_keeps_the_lock_for_the_second_run() {
        let (svc, store, log) = under_logged_lock(true, 1_000);
        store.fail_next_commit(Failure::Conflict);
        let b = svc.points.use_points(use_300()).await.unwrap();
        assert_eq!(b.balance, 700);
        assert_eq!(store.balance(user()), 700);
        assert_eq!(store.history_of(user()).len(), 1);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "acquire wallet:3",
                "write",
                "rollback",
                "write",
                "pass wallet:3",
                "commit",
                "release wallet:3"
            ]
        );
    }

    /// A use the rules refuse writes nothing and hands nothing over early.
    #[tokio::test]
    async fn a_refused_use_rolls_back_before_the_release() {
        let (svc, store, log) = under_logged_lock(true, 100);
        assert!(matches!(
            svc.points.use_points(use_300()).await,
            Err(UseError::InsufficientPoints {
                balance: 100,
                needed: 300
            })
        ));
        assert_eq!(store.balance(user()), 100);
        assert_eq!(
            *log.lock().unwrap(),
            ["acquire wallet:3", "rollback", "release wallet:3"]
        );
    }
}
