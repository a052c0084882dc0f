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
use crate::services::{Ports, begin_claimed, finish};

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
        let (mut uow, claim) = begin_claimed(
            &self.ports,
            &protection,
            cmd.user,
            KeyScope::Charge,
            cmd.idempotency.as_ref(),
            || format!("amount={}", cmd.amount),
        )
        .await?;
        let outcome = async {
            match claim {
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
