//! The storage ports' contract, written once, generic over a [`Harness`],
//! and run against both stores (the `contract!` of `mod.rs`): version
//! checks, fencing tokens, compare-and-set of statuses, one live
//! reservation per seat, one payment per reservation, idempotency keys, the
//! outbox, the plain reads and the catalogue, and the domain services over
//! the store end to end.

use super::*;

use concert_domain::{
    ChargePoints, Claim, ConcertId, EventType, Failure, KeyScope, NewHistoryEntry, NewPayment,
    PayError, PayReservation, PaymentId, Stored, Wallet,
};
use concert_domain::{Event, WalletRepository};

contract!(
    seats_are_found_by_number_locked_by_id_and_saved_under_their_version,
    optimistic_units_that_read_the_same_version_never_both_commit,
    fenced_saves_refuse_a_newer_token_and_record_their_own,
    a_unit_whose_fence_is_lost_commits_nothing,
    hold_if_free_takes_a_free_or_ended_seat_in_one_write,
    release_expired_frees_only_ended_holds,
    reservations_are_recorded_found_and_written_by_status,
    a_seat_never_has_two_live_reservations,
    lock_holds_of_counts_live_holds_only,
    stale_and_expire_find_and_mark_ended_holds_only,
    wallets_are_created_once_saved_and_appended_to,
    change_atomically_applies_the_rule_in_one_write_or_writes_nothing,
    one_payment_per_reservation_and_its_status_is_compared_and_set,
    a_key_is_new_then_done_and_refuses_another_request,
    the_outbox_records_every_event_of_a_committed_unit_only,
    a_dropped_unit_writes_nothing,
    queries_answer_none_for_unknown_ids_and_list_newest_first,
    the_catalogue_lists_creates_and_counts_available_seats,
    concurrent_optimistic_uses_lose_races_but_never_points,
    one_seat_has_one_winner_under_every_control,
    pay_refund_cancel_and_expire_end_to_end_under_every_control,
    fenced_uses_under_the_in_process_lock_all_succeed_and_record_their_token,
);

async fn seats_are_found_by_number_locked_by_id_and_saved_under_their_version<H: Harness>() {
    let env = H::fresh().await;
    let s = schedule(&env, 500).await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    let found = uow
        .seats()
        .find(s, &[n(9), n(2), n(9), n(5)])
        .await
        .unwrap();
    assert_eq!(numbers(&found), [2, 5, 9]);
    assert!(found.iter().all(|seat| seat.state == SeatState::Available
        && seat.version == 0
        && seat.price.get() == 500
        && seat.schedule == s));
    assert!(uow.seats().find(s, &[]).await.unwrap().is_empty());
    assert!(
        uow.seats()
            .find(ScheduleId::from(9_999), &[n(1)])
            .await
            .unwrap()
            .is_empty()
    );

    let until = t0() + mins(5);
    let held = found[0].hold(user(1), t0(), until).unwrap().seat;
    assert_eq!(held.version, 1);
    uow.seats().save(&held).await.unwrap();
    // Written again from the same read: the stored version moved on.
    assert!(matches!(
        uow.seats().save(&held).await,
        Err(Failure::Conflict)
    ));
    uow.commit().await.unwrap();
    assert_eq!(stored_seat(&env, s, n(2)).await, Some(held.clone()));

    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(uow.seats().lock(held.id).await.unwrap(), Some(held.clone()));
    assert_eq!(
        uow.seats()
            .lock(concert_domain::SeatId::from(999_999))
            .await
            .unwrap(),
        None
    );
    let sold = Seat {
        state: SeatState::Sold,
        version: 2,
        ..held.clone()
    };
    uow.seats().save(&sold).await.unwrap();
    let freed = sold.release();
    uow.seats().save(&freed).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(stored_seat(&env, s, n(2)).await, Some(freed));
    // version 0 cannot have been read
    let mut uow = begin(&env, Protection::Optimistic).await;
    let zero = Seat { version: 0, ..held };
    assert!(matches!(
        uow.seats().save(&zero).await,
        Err(Failure::Conflict)
    ));
    uow.rollback().await;
}

async fn optimistic_units_that_read_the_same_version_never_both_commit<H: Harness>() {
    second_reader_conflicts(&H::fresh().await, false).await;
}

/// Units A and B read seat 1 and user 1's wallet at the same versions; A
/// writes both and commits. B's writes are refused with `Conflict`: at its
/// saves when `at_save`, else at its saves or at the latest at its commit.
/// What A wrote stays.
pub(super) async fn second_reader_conflicts<H: Harness>(env: &H, at_save: bool) {
    let s = schedule(env, 500).await;
    set_balance(env, user(1), 1_000).await;

    let mut a = begin(env, Protection::Optimistic).await;
    let mut b = begin(env, Protection::Optimistic).await;
    let seat_a = a.seats().find(s, &[n(1)]).await.unwrap().remove(0);
    let seat_b = b.seats().find(s, &[n(1)]).await.unwrap().remove(0);
    let wallet_a = a.wallets().find(user(1)).await.unwrap().unwrap();
    let wallet_b = b.wallets().find(user(1)).await.unwrap().unwrap();
    assert_eq!((seat_a.version, wallet_a.version), (0, 1));
    assert_eq!((seat_b.version, wallet_b.version), (0, 1));

    let held_a = seat_a.hold(user(1), t0(), t0() + mins(5)).unwrap().seat;
    let charged_a = wallet_a.apply(PointChange::Charge(pts(100))).unwrap();
    a.seats().save(&held_a).await.unwrap();
    a.wallets().save(&charged_a).await.unwrap();
    a.commit().await.unwrap();

    let held_b = seat_b.hold(user(2), t0(), t0() + mins(5)).unwrap().seat;
    let used_b = wallet_b.apply(PointChange::Use(pts(100))).unwrap();
    let saved = [
        b.seats().save(&held_b).await,
        b.wallets().save(&used_b).await,
    ];
    let conflict = |r: &Result<(), Failure>| matches!(r, Err(Failure::Conflict));
    if at_save {
        assert!(saved.iter().all(conflict), "{saved:?}");
    } else {
        assert!(saved.iter().all(|r| r.is_ok() || conflict(r)), "{saved:?}");
    }
    if saved.iter().all(Result::is_ok) {
        assert!(matches!(b.commit().await, Err(Failure::Conflict)));
    } else {
        b.rollback().await;
    }

    assert_eq!(stored_seat(env, s, n(1)).await, Some(held_a));
    assert_eq!(env.store().wallet(user(1)).await.unwrap(), Some(charged_a));
}

async fn fenced_saves_refuse_a_newer_token_and_record_their_own<H: Harness>() {
    let env = H::fresh().await;
    let s = schedule(&env, 500).await;
    let seat_key = LockKey::seat(s, n(4));
    env.set_seat_fence_token(s, n(4), 5).await;

    // A stale holder (token 4): refused when it reads and when it writes,
    // nothing written.
    let seat = stored_seat(&env, s, n(4)).await.unwrap();
    let held = seat.hold(user(1), t0(), t0() + mins(5)).unwrap().seat;
    let mut uow = begin(&env, fenced(seat_key.clone(), &Fence::new(4))).await;
    assert!(matches!(
        uow.seats().find(s, &[n(4)]).await,
        Err(Failure::LockLost)
    ));
    uow.rollback().await;
    let mut uow = begin(&env, fenced(seat_key.clone(), &Fence::new(4))).await;
    assert!(matches!(
        uow.seats().save(&held).await,
        Err(Failure::LockLost)
    ));
    uow.rollback().await;
    // A lost fence is refused at the read even with a newer token.
    let lost = Fence::new(9);
    lost.mark_lost();
    let mut uow = begin(&env, fenced(seat_key.clone(), &lost)).await;
    assert!(matches!(
        uow.seats().find(s, &[n(4)]).await,
        Err(Failure::LockLost)
    ));
    uow.rollback().await;
    assert_eq!(env.seat_fence_token(s, n(4)).await, 5);
    assert_eq!(stored_seat(&env, s, n(4)).await.unwrap().version, 0);

    // A newer holder (token 7): written, token recorded.
    let mut uow = begin(&env, fenced(seat_key.clone(), &Fence::new(7))).await;
    uow.seats().save(&held).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.seat_fence_token(s, n(4)).await, 7);
    assert_eq!(stored_seat(&env, s, n(4)).await, Some(held.clone()));

    // The same token writes again; a stale version under a valid fence is
    // a conflict, not a lost lock.
    let mut uow = begin(&env, fenced(seat_key.clone(), &Fence::new(7))).await;
    assert!(matches!(
        uow.seats().save(&held).await,
        Err(Failure::Conflict)
    ));
    let sold = Seat {
        state: SeatState::Sold,
        version: 2,
        ..held.clone()
    };
    uow.seats().save(&sold).await.unwrap();
    uow.commit().await.unwrap();

    // A seat without a fence of its own is only version-checked.
    let other = LockKey::seat(s, n(9));
    let mut uow = begin(&env, fenced(other, &Fence::new(1))).await;
    let freed = sold.release();
    uow.seats().save(&freed).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.seat_fence_token(s, n(4)).await, 7);
    assert_eq!(stored_seat(&env, s, n(4)).await, Some(freed));

    // Wallets alike.
    set_balance(&env, user(3), 1_000).await;
    env.set_wallet_fence_token(user(3), 10).await;
    let wallet_key = LockKey::wallet(user(3));
    let mut uow = begin(&env, fenced(wallet_key.clone(), &Fence::new(9))).await;
    let wallet = uow.wallets().find(user(3)).await.unwrap().unwrap();
    let used = wallet.apply(PointChange::Use(pts(100))).unwrap();
    assert!(matches!(
        uow.wallets().save(&used).await,
        Err(Failure::LockLost)
    ));
    uow.rollback().await;
    let mut uow = begin(&env, fenced(wallet_key.clone(), &Fence::new(11))).await;
    uow.wallets().save(&used).await.unwrap();
    assert!(matches!(
        uow.wallets().save(&used).await,
        Err(Failure::Conflict)
    ));
    uow.commit().await.unwrap();
    assert_eq!(env.wallet_fence_token(user(3)).await, 11);
    assert_eq!(env.store().wallet(user(3)).await.unwrap(), Some(used));
    let mut uow = begin(&env, fenced(LockKey::wallet(user(4)), &Fence::new(1))).await;
    let again = used.apply(PointChange::Use(pts(100))).unwrap();
    uow.wallets().save(&again).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.wallet_fence_token(user(3)).await, 11);
}

async fn a_unit_whose_fence_is_lost_commits_nothing<H: Harness>() {
    let env = H::fresh().await;
    set_balance(&env, user(1), 1_000).await;
    let fence = Fence::new(10);
    let mut uow = begin(&env, fenced(LockKey::wallet(user(1)), &fence)).await;
    let wallet = uow.wallets().find(user(1)).await.unwrap().unwrap();
    let used = wallet.apply(PointChange::Use(pts(300))).unwrap();
    uow.wallets().save(&used).await.unwrap();
    uow.wallets()
        .append(&NewHistoryEntry {
            user: user(1),
            change: PointChange::Use(pts(300)),
            balance_after: used.balance,
            at: t0(),
        })
        .await
        .unwrap();
    uow.outbox()
        .record(&[Event::points(
            user(1),
            PointChange::Use(pts(300)),
            used.balance,
            None,
            t0(),
        )])
        .await
        .unwrap();
    fence.mark_lost();
    assert!(matches!(uow.commit().await, Err(Failure::LockLost)));

    assert_eq!(env.store().wallet(user(1)).await.unwrap(), Some(wallet));
    assert_eq!(history_count(&env, user(1)).await, 1);
    assert_eq!(env.wallet_fence_token(user(1)).await, 0);
    assert_eq!(outbox_count(&env).await, 0);
}

async fn hold_if_free_takes_a_free_or_ended_seat_in_one_write<H: Harness>() {
    let env = H::fresh().await;
    let s = schedule(&env, 500).await;
    let mut uow = begin(&env, Protection::Atomic).await;
    let until = t0() + mins(5);
    assert!(
        uow.seats()
            .hold_if_free(s, n(1), user(1), t0(), until)
            .await
            .unwrap()
    );
    // held and live: refused, for anyone
    for who in [user(1), user(2)] {
        assert!(
            !uow.seats()
                .hold_if_free(s, n(1), who, t0(), until)
                .await
                .unwrap()
        );
    }
    // the hold ended at or before now: taken over
    assert!(
        uow.seats()
            .hold_if_free(s, n(1), user(2), until, until + mins(5))
            .await
            .unwrap()
    );
    // unknown seat
    assert!(
        !uow.seats()
            .hold_if_free(ScheduleId::from(9_999), n(1), user(1), t0(), until)
            .await
            .unwrap()
    );
    uow.commit().await.unwrap();
    let seat = stored_seat(&env, s, n(1)).await.unwrap();
    assert_eq!(
        (seat.state, seat.version),
        (
            SeatState::Held {
                by: user(2),
                until: until + mins(5)
            },
            2
        )
    );

    // sold: refused
    let mut uow = begin(&env, Protection::Atomic).await;
    let sold = Seat {
        state: SeatState::Sold,
        version: 3,
        ..seat
    };
    uow.seats().save(&sold).await.unwrap();
    assert!(
        !uow.seats()
            .hold_if_free(s, n(1), user(3), until + mins(60), until + mins(65))
            .await
            .unwrap()
    );
    uow.commit().await.unwrap();
    assert_eq!(stored_seat(&env, s, n(1)).await, Some(sold));
}

async fn release_expired_frees_only_ended_holds<H: Harness>() {
    let env = H::fresh().await;
    let s = schedule(&env, 500).await;
    let ended = hold(&env, s, n(1), user(1), t0()).await;
    let live = hold(&env, s, n(2), user(2), t0() + mins(5)).await;
    let free = stored_seat(&env, s, n(3)).await.unwrap();

    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(uow.seats().release_expired(&[], t0()).await.unwrap(), 0);
    let freed = uow
        .seats()
        .release_expired(&[ended.seat, live.seat, free.id], t0())
        .await
        .unwrap();
    assert_eq!(freed, 1);
    uow.commit().await.unwrap();
    let seat1 = stored_seat(&env, s, n(1)).await.unwrap();
    assert_eq!((seat1.state, seat1.version), (SeatState::Available, 2));
    let seat2 = stored_seat(&env, s, n(2)).await.unwrap();
    assert_eq!(seat2.version, 1);
    assert!(matches!(seat2.state, SeatState::Held { .. }));
    assert_eq!(stored_seat(&env, s, n(3)).await, Some(free));
}

async fn reservations_are_recorded_found_and_written_by_status<H: Harness>() {
    let env = H::fresh().await;
    let s = schedule(&env, 700).await;
    let until = t0() + mins(5);
    let r = hold(&env, s, n(8), user(5), until).await;
    assert_eq!(
        (
            r.schedule,
            r.seat_number,
            r.user,
            r.price.get(),
            r.status,
            r.expires_at
        ),
        (s, n(8), user(5), 700, ReservationStatus::Held, until)
    );

    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(
        uow.reservations().find(r.id).await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        uow.reservations()
            .find(ReservationId::from(999_999))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        uow.reservations().held_for_seat(r.seat).await.unwrap(),
        Some(r.clone())
    );
    // compare-and-set of the status
    let confirmed = r.confirm();
    assert!(matches!(
        uow.reservations()
            .save(&confirmed, ReservationStatus::Expired)
            .await,
        Err(Failure::Conflict)
    ));
    uow.reservations()
        .save(&confirmed, ReservationStatus::Held)
        .await
        .unwrap();
    // written in this unit: seen by it
    assert_eq!(
        uow.reservations().find(r.id).await.unwrap(),
        Some(confirmed.clone())
    );
    assert_eq!(
        uow.reservations().held_for_seat(r.seat).await.unwrap(),
        None
    );
    assert!(matches!(
        uow.reservations()
            .save(&confirmed, ReservationStatus::Held)
            .await,
        Err(Failure::Conflict)
    ));
    let refunded = confirmed.refund();
    uow.reservations()
        .save(&refunded, ReservationStatus::Confirmed)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.reservations_of_seat(s, n(8)).await, vec![refunded]);

    // every status the domain knows is storable
    let r2 = hold(&env, s, n(9), user(5), until).await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    let cancelled = r2.cancel(user(5), t0()).unwrap().unwrap();
    uow.reservations()
        .save(&cancelled, ReservationStatus::Held)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert_eq!(status(&env, r2.id).await, ReservationStatus::Cancelled);
}

async fn a_seat_never_has_two_live_reservations<H: Harness>() {
    let env = H::fresh().await;
    let s = schedule(&env, 500).await;
    let first = hold(&env, s, n(1), user(1), t0() + mins(5)).await;
    let seat = stored_seat(&env, s, n(1)).await.unwrap();
    let twin = NewReservation::for_seat(&seat, user(2), t0(), t0() + mins(5));

    // held, and confirmed too, is live
    for live in [None, Some(first.confirm())] {
        let mut uow = begin(&env, Protection::Optimistic).await;
        if let Some(confirmed) = &live {
            let saved = uow.reservations().save(confirmed, ReservationStatus::Held);
            saved.await.unwrap();
        }
        assert!(matches!(
            uow.reservations().insert(&twin).await,
            Err(Failure::Conflict)
        ));
        uow.rollback().await;
    }

    // an expired one is not
    let mut uow = begin(&env, Protection::Optimistic).await;
    uow.reservations()
        .save(&first.expire(), ReservationStatus::Held)
        .await
        .unwrap();
    let second = uow.reservations().insert(&twin).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(live_reservations(&env, s, n(1)).await, 1);
    let stored = env.reservations_of_seat(s, n(1)).await;
    assert_eq!(stored, vec![first.expire(), second]);
}

async fn lock_holds_of_counts_live_holds_only<H: Harness>() {
    let env = H::fresh().await;
    let (_, a) = count_holds(&env).await;
    a.rollback().await;
}

/// Holds of user 1 on a schedule: one live, one ended, one expired, and
/// holds of another user and on another schedule; `lock_holds_of` counts
/// the live one only, and 0 for a user's first hold. Returns the schedule
/// and the unit that asked for user 1, still open.
pub(super) async fn count_holds<H: Harness>(env: &H) -> (ScheduleId, Box<dyn UnitOfWork>) {
    let s = schedule(env, 500).await;
    let other = schedule(env, 500).await;
    hold(env, s, n(1), user(1), t0() + mins(5)).await;
    hold(env, s, n(2), user(1), t0()).await; // ended
    hold(env, s, n(3), user(2), t0() + mins(5)).await; // another user
    hold(env, other, n(1), user(1), t0() + mins(5)).await; // another schedule
    let expired = hold(env, s, n(4), user(1), t0() + mins(5)).await;
    let mut uow = begin(env, Protection::Optimistic).await;
    uow.reservations()
        .save(&expired.expire(), ReservationStatus::Held)
        .await
        .unwrap();
    uow.commit().await.unwrap();

    let mut a = begin(env, Protection::Optimistic).await;
    assert_eq!(
        a.reservations()
            .lock_holds_of(user(1), s, t0())
            .await
            .unwrap(),
        1
    );
    // a first hold of a user: the lock row is created
    let mut c = begin(env, Protection::Optimistic).await;
    assert_eq!(
        c.reservations()
            .lock_holds_of(user(9), s, t0())
            .await
            .unwrap(),
        0
    );
    c.commit().await.unwrap();
    (s, a)
}

async fn stale_and_expire_find_and_mark_ended_holds_only<H: Harness>() {
    let env = H::fresh().await;
    let s = schedule(&env, 500).await;
    let old = hold(&env, s, n(1), user(1), t0() - mins(10)).await;
    let older = hold(&env, s, n(2), user(2), t0() - mins(20)).await;
    let at_now = hold(&env, s, n(3), user(3), t0()).await;
    let live = hold(&env, s, n(4), user(4), t0() + mins(1)).await;
    let paid = hold(&env, s, n(5), user(5), t0() - mins(30)).await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    uow.reservations()
        .save(&paid.confirm(), ReservationStatus::Held)
        .await
        .unwrap();
    uow.commit().await.unwrap();

    let mut uow = begin(&env, Protection::Optimistic).await;
    let stale = uow.reservations().stale(t0(), 10).await.unwrap();
    let ids: Vec<_> = stale.iter().map(|r| r.id).collect();
    assert_eq!(ids, [older.id, old.id, at_now.id]);
    let first_two = uow.reservations().stale(t0(), 2).await.unwrap();
    assert_eq!(first_two, stale[..2].to_vec());
    assert!(
        uow.reservations()
            .stale(t0() - mins(60), 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        uow.reservations()
            .expire(&[], t0())
            .await
            .unwrap()
            .is_empty()
    );
    let marked = uow
        .reservations()
        .expire(&[old.id, live.id, paid.id, at_now.id], t0())
        .await
        .unwrap();
    assert_eq!(marked, [old.id, at_now.id]);
    // marked already: not again
    assert!(
        uow.reservations()
            .expire(&[old.id], t0())
            .await
            .unwrap()
            .is_empty()
    );
    uow.commit().await.unwrap();
    assert_eq!(status(&env, old.id).await, ReservationStatus::Expired);
    assert_eq!(status(&env, at_now.id).await, ReservationStatus::Expired);
    assert_eq!(status(&env, older.id).await, ReservationStatus::Held);
    assert_eq!(status(&env, live.id).await, ReservationStatus::Held);
    assert_eq!(status(&env, paid.id).await, ReservationStatus::Confirmed);
}

async fn wallets_are_created_once_saved_and_appended_to<H: Harness>() {
    let env = H::fresh().await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(uow.wallets().find(user(1)).await.unwrap(), None);
    uow.wallets().create(user(1)).await.unwrap();
    uow.wallets().create(user(1)).await.unwrap();
    let empty = uow.wallets().find(user(1)).await.unwrap().unwrap();
    assert_eq!(empty, Wallet::empty(user(1)));
    let charged = empty.apply(PointChange::Charge(pts(700))).unwrap();
    uow.wallets().save(&charged).await.unwrap();
    uow.wallets()
        .append(&NewHistoryEntry {
            user: user(1),
            change: PointChange::Charge(pts(700)),
            balance_after: 700,
            at: t0(),
        })
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.store().wallet(user(1)).await.unwrap(), Some(charged));
    let history = env.store().history(user(1)).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (
            history[0].kind,
            history[0].amount,
            history[0].balance_after,
            history[0].created_at
        ),
        (PointKind::Charge, 700, 700, t0())
    );
    // a wallet never charged does not exist
    assert_eq!(env.store().wallet(user(2)).await.unwrap(), None);
}

/// Applies each change with `change_atomically`, checking the balance after
/// (`None`: refused, nothing written).
async fn change_each(
    wallets: &mut dyn WalletRepository,
    steps: &[(UserId, PointChange, Option<u64>)],
) {
    for &(who, change, after) in steps {
        let got = wallets.change_atomically(who, change, t0()).await.unwrap();
        assert_eq!(got, after, "{who:?} {change:?}");
    }
}

async fn change_atomically_applies_the_rule_in_one_write_or_writes_nothing<H: Harness>() {
    let env = H::fresh().await;
    set_balance(&env, user(1), 1_000).await; // version 1, 1 history line
    let mut uow = begin(&env, Protection::Atomic).await;
    change_each(
        uow.wallets(),
        &[
            (user(1), PointChange::Use(pts(400)), Some(600)),
            (user(1), PointChange::Use(pts(601)), None),
            (user(1), PointChange::Use(pts(600)), Some(0)),
            (user(2), PointChange::Charge(pts(1)), None), // no wallet
        ],
    )
    .await;
    uow.commit().await.unwrap();
    let wallet = env.store().wallet(user(1)).await.unwrap().unwrap();
    assert_eq!((wallet.balance, wallet.version), (0, 3));
    let history = env.store().history(user(1)).await.unwrap();
    let lines: Vec<_> = history
        .iter()
        .map(|h| (h.kind, h.amount, h.balance_after))
        .collect();
    assert_eq!(
        lines,
        [
            (PointKind::Use, 600, 0),
            (PointKind::Use, 400, 600),
            (PointKind::Charge, 1_000, 1_000)
        ]
    );
    assert_eq!(env.store().wallet(user(2)).await.unwrap(), None);

    // charges stop at the maximum balance; refunds always come back
    let max = concert_domain::MAX_BALANCE;
    set_balance(&env, user(3), max - 10).await;
    let lines = history_count(&env, user(3)).await;
    let mut uow = begin(&env, Protection::Atomic).await;
    change_each(
        uow.wallets(),
        &[
            (user(3), PointChange::Charge(pts(11)), None),
            (user(3), PointChange::Charge(pts(10)), Some(max)),
            (user(3), PointChange::Refund(pts(500)), Some(max + 500)),
        ],
    )
    .await;
    uow.commit().await.unwrap();
    assert_eq!(history_count(&env, user(3)).await, lines + 2);
    let latest = &env.store().history(user(3)).await.unwrap()[0];
    assert_eq!(
        (latest.kind, latest.amount, latest.balance_after),
        (PointKind::Refund, 500, max + 500)
    );
}

async fn one_payment_per_reservation_and_its_status_is_compared_and_set<H: Harness>() {
    let env = H::fresh().await;
    let s = schedule(&env, 500).await;
    let r = hold(&env, s, n(1), user(1), t0() + mins(5)).await;
    let new = NewPayment {
        reservation: r.id,
        user: user(1),
        amount: pts(500),
        paid_at: t0(),
    };
    let mut uow = begin(&env, Protection::Optimistic).await;
    let paid = uow.payments().insert(&new).await.unwrap();
    assert_eq!(
        (
            paid.reservation,
            paid.user,
            paid.amount,
            paid.paid_at,
            paid.status
        ),
        (r.id, user(1), pts(500), t0(), PaymentStatus::Paid)
    );
    assert!(matches!(
        uow.payments().insert(&new).await,
        Err(Failure::Conflict)
    ));
    uow.rollback().await;
    assert_eq!(env.payment_count().await, 0);

    let mut uow = begin(&env, Protection::Optimistic).await;
    let paid = uow.payments().insert(&new).await.unwrap();
    uow.commit().await.unwrap();
    let mut uow = begin(&env, Protection::Optimistic).await;
    assert!(matches!(
        uow.payments().insert(&new).await,
        Err(Failure::Conflict)
    ));
    uow.rollback().await;

    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(
        uow.payments().find(paid.id).await.unwrap(),
        Some(paid.clone())
    );
    assert_eq!(
        uow.payments().find(PaymentId::from(999_999)).await.unwrap(),
        None
    );
    let refunded = concert_domain::Payment {
        status: PaymentStatus::Refunded,
        ..paid.clone()
    };
    uow.payments()
        .save(&refunded, PaymentStatus::Paid)
        .await
        .unwrap();
    assert!(matches!(
        uow.payments().save(&refunded, PaymentStatus::Paid).await,
        Err(Failure::Conflict)
    ));
    uow.commit().await.unwrap();
    assert_eq!(
        env.payments_of_reservation(r.id).await,
        vec![refunded.clone()]
    );
    assert_eq!(env.store().payment(paid.id).await.unwrap(), Some(refunded));
}

async fn a_key_is_new_then_done_and_refuses_another_request<H: Harness>() {
    let env = H::fresh().await;
    let long = "k".repeat(IdempotencyKey::MAX_LEN);
    for k in ["order-1", long.as_str()] {
        let k = key(k);
        let mut uow = begin(&env, Protection::Optimistic).await;
        let idem = uow.idempotency();
        assert_eq!(
            idem.claim(user(1), KeyScope::Charge, &k, "amount=5")
                .await
                .unwrap(),
            Claim::New
        );
        idem.complete(user(1), KeyScope::Charge, &k, Stored::Balance(105))
            .await
            .unwrap();
        uow.commit().await.unwrap();

        let mut uow = begin(&env, Protection::Optimistic).await;
        let idem = uow.idempotency();
        assert_eq!(
            idem.claim(user(1), KeyScope::Charge, &k, "amount=5")
                .await
                .unwrap(),
            Claim::Done(Stored::Balance(105))
        );
        assert_eq!(
            idem.claim(user(1), KeyScope::Charge, &k, "amount=6")
                .await
                .unwrap(),
            Claim::Mismatch
        );
        // other scope, other user: other keys
        assert_eq!(
            idem.claim(user(1), KeyScope::Payment, &k, "reservation=1")
                .await
                .unwrap(),
            Claim::New
        );
        idem.complete(
            user(1),
            KeyScope::Payment,
            &k,
            Stored::Payment(PaymentId::from(4)),
        )
        .await
        .unwrap();
        assert_eq!(
            idem.claim(user(2), KeyScope::Charge, &k, "amount=5")
                .await
                .unwrap(),
            Claim::New
        );
        uow.commit().await.unwrap();
        let mut uow = begin(&env, Protection::Optimistic).await;
        assert_eq!(
            uow.idempotency()
                .claim(user(1), KeyScope::Payment, &k, "reservation=1")
                .await
                .unwrap(),
            Claim::Done(Stored::Payment(PaymentId::from(4)))
        );
        uow.rollback().await;
    }
    // keys are compared byte for byte
    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(
        uow.idempotency()
            .claim(user(1), KeyScope::Charge, &key("ORDER-1"), "amount=5")
            .await
            .unwrap(),
        Claim::New
    );
    // completing a key never claimed is a bug
    assert!(matches!(
        uow.idempotency()
            .complete(user(1), KeyScope::Charge, &key("never"), Stored::Balance(1))
            .await,
        Err(Failure::Unknown(_))
    ));
    uow.rollback().await;
}

async fn the_outbox_records_every_event_of_a_committed_unit_only<H: Harness>() {
    record_outbox(&H::fresh().await).await;
}

/// Records three events in a unit rolled back (nothing recorded), in a
/// committed one (all three, in order), then 20 at once (more than the
/// statements MySQL keeps prepared); returns the reservation and the three
/// events.
pub(super) async fn record_outbox<H: Harness>(env: &H) -> (Reservation, Vec<Event>) {
    let s = schedule(env, 500).await;
    let r = hold(env, s, n(1), user(7), t0() + mins(5)).await;
    let events = vec![
        Event::seat_held(&r, t0()),
        Event::points(
            user(7),
            PointChange::Use(pts(500)),
            99_500,
            Some(PaymentId::from(3)),
            t0() + chrono::Duration::microseconds(1),
        ),
        Event::hold_cancelled(&r, t0()),
    ];

    let mut uow = begin(env, Protection::Optimistic).await;
    uow.outbox().record(&events).await.unwrap();
    uow.rollback().await;
    assert_eq!(outbox_count(env).await, 0);

    let mut uow = begin(env, Protection::Optimistic).await;
    uow.outbox().record(&[]).await.unwrap();
    uow.outbox().record(&events).await.unwrap();
    uow.commit().await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(env.outbox_types().await, kinds);

    let many: Vec<_> = (0..20).map(|_| Event::hold_expired(&r, t0())).collect();
    let mut uow = begin(env, Protection::Optimistic).await;
    uow.outbox().record(&many).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(outbox_count(env).await, 23);
    (r, events)
}

/// Dropped without commit, a unit rolls back: also after `write`.
async fn a_dropped_unit_writes_nothing<H: Harness>() {
    let env = H::fresh().await;
    set_balance(&env, user(1), 100).await;
    for written in [false, true] {
        {
            let mut uow = begin(&env, Protection::Optimistic).await;
            let w = uow.wallets().find(user(1)).await.unwrap().unwrap();
            let used = w.apply(PointChange::Use(pts(100))).unwrap();
            uow.wallets().save(&used).await.unwrap();
            if written {
                uow.write().await.unwrap();
            }
            // dropped here, neither committed nor rolled back
        }
        let w = env.store().wallet(user(1)).await.unwrap().unwrap();
        assert_eq!((w.balance, w.version), (100, 1), "written: {written}");
    }
}

async fn queries_answer_none_for_unknown_ids_and_list_newest_first<H: Harness>() {
    let env = H::fresh().await;
    let s = schedule(&env, 500).await;
    let store = env.store();
    assert_eq!(
        store.reservation(ReservationId::from(1)).await.unwrap(),
        None
    );
    assert_eq!(store.payment(PaymentId::from(1)).await.unwrap(), None);
    assert_eq!(store.wallet(user(1)).await.unwrap(), None);
    assert!(store.reservations_of(user(1)).await.unwrap().is_empty());
    assert!(store.history(user(1)).await.unwrap().is_empty());

    let a = hold(&env, s, n(1), user(1), t0() + mins(5)).await;
    let b = hold(&env, s, n(2), user(1), t0() + mins(5)).await;
    hold(&env, s, n(3), user(2), t0() + mins(5)).await;
    assert_eq!(store.reservation(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.reservations_of(user(1)).await.unwrap(), vec![b, a]);

    set_balance(&env, user(1), 100).await;
    set_balance(&env, user(1), 40).await;
    let history = store.history(user(1)).await.unwrap();
    let lines: Vec<_> = history
        .iter()
        .map(|h| (h.kind, h.amount, h.balance_after))
        .collect();
    assert_eq!(
        lines,
        [(PointKind::Use, 60, 40), (PointKind::Charge, 100, 100)]
    );
    assert!(history[0].id > history[1].id);
    assert_eq!(
        store.wallet(user(1)).await.unwrap(),
        Some(Wallet {
            user: user(1),
            balance: 40,
            version: 2
        })
    );
}

async fn the_catalogue_lists_creates_and_counts_available_seats<H: Harness>() {
    let env = H::fresh().await;
    let store = env.store();
    assert!(store.concerts().await.unwrap().is_empty());
    assert_eq!(store.concert(ConcertId::from(1)).await.unwrap(), None);
    assert_eq!(store.schedule(ScheduleId::from(1)).await.unwrap(), None);
    assert_eq!(
        store.schedules(ConcertId::from(1), t0()).await.unwrap(),
        None
    );
    assert_eq!(store.seats(ScheduleId::from(1)).await.unwrap(), None);

    let night = store
        .create_concert(&Title::new("  Night  ").unwrap())
        .await
        .unwrap();
    assert_eq!(night.title, "Night");
    let day = store
        .create_concert(&Title::new("Day").unwrap())
        .await
        .unwrap();
    assert_eq!(
        store.concerts().await.unwrap(),
        vec![night.clone(), day.clone()]
    );
    assert_eq!(store.concert(day.id).await.unwrap(), Some(day.clone()));
    assert_eq!(store.schedules(day.id, t0()).await.unwrap(), Some(vec![]));

    let prices: Vec<Points> = SeatNumber::all()
        .map(|s| pts(i64::from(s.get()) * 10))
        .collect();
    let new = |starts_at, concert| {
        NewSchedule::new(concert, starts_at, prices.clone(), t0() - mins(1)).unwrap()
    };
    let later = store
        .create_schedule(&new(t0() + mins(120), night.id))
        .await
        .unwrap()
        .unwrap();
    let sooner = store
        .create_schedule(&new(t0() + mins(60), night.id))
        .await
        .unwrap()
        .unwrap();
    let past = store
        .create_schedule(&new(t0(), night.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (sooner.concert, sooner.starts_at),
        (night.id, t0() + mins(60))
    );
    assert_eq!(store.schedule(later.id).await.unwrap(), Some(later.clone()));
    assert_eq!(
        store
            .create_schedule(&new(t0() + mins(60), ConcertId::from(999_999)))
            .await
            .unwrap(),
        None
    );
    assert_eq!(catalogue_size(&env).await, (2, 3));

    let seats = store.seats(sooner.id).await.unwrap().unwrap();
    assert_eq!(seats.len(), 50);
    assert!(
        seats
            .iter()
            .all(|s| s.price.get() == u64::from(s.number.get()) * 10
                && s.state == SeatState::Available
                && s.version == 0)
    );
    assert_eq!(numbers(&seats), (1..=50).collect::<Vec<u8>>());

    // availability at `after`: a hold that ended counts as available
    hold(&env, sooner.id, n(1), user(1), t0() + mins(5)).await;
    hold(&env, sooner.id, n(2), user(1), t0()).await;
    let r = hold(&env, sooner.id, n(3), user(1), t0() + mins(5)).await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    let seat = uow.seats().lock(r.seat).await.unwrap().unwrap();
    uow.seats()
        .save(&Seat {
            state: SeatState::Sold,
            version: seat.version + 1,
            ..seat
        })
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let summaries = store.schedules(night.id, t0()).await.unwrap().unwrap();
    let seen: Vec<_> = summaries
        .iter()
        .map(|s| (s.id, s.concert, s.starts_at, s.available_seats))
        .collect();
    assert_eq!(
        seen,
        [
            (sooner.id, night.id, t0() + mins(60), 48),
            (later.id, night.id, t0() + mins(120), 50)
        ]
    );
    assert!(!summaries.iter().any(|s| s.id == past.id));
    let at_hold_end = store
        .schedules(night.id, t0() + mins(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at_hold_end[0].available_seats, 49);
}

async fn concurrent_optimistic_uses_lose_races_but_never_points<H: Harness>() {
    let env = H::fresh().await;
    set_balance(&env, user(1), 100_000).await;
    let clock = TestClock::new();
    let svc = services(
        &env,
        Control::optimistic("optimistic"),
        Policy::default(),
        &clock,
    );
    let tasks = spawn_uses(&svc, 100);
    let mut ok = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(
                matches!(e, concert_domain::UseError::Failed(Failure::Conflict)),
                "{e:?}"
            ),
        }
    }
    assert!(ok >= 1);
    assert_eq!(
        env.store().wallet(user(1)).await.unwrap().unwrap().balance,
        100_000 - 500 * ok
    );
    assert_eq!(history_count(&env, user(1)).await, ok + 1);
    assert_eq!(outbox_count(&env).await, ok);
}

async fn one_seat_has_one_winner_under_every_control<H: Harness>() {
    let env = H::fresh().await;
    let clock = TestClock::new();
    for control in controls() {
        let name = control.name().to_owned();
        let s = schedule(&env, 500).await;
        let before = outbox_count(&env).await;
        let svc = services(&env, control, Policy::default(), &clock);
        let tasks: Vec<_> = (1..=30)
            .map(|u| {
                let svc = svc.clone();
                tokio::spawn(async move { reserve(&svc, user(u), s, n(7)).await })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => winners += 1,
                Err(ReserveError::SeatUnavailable { .. })
                | Err(ReserveError::Failed(Failure::Conflict)) => {}
                Err(e) => panic!("{name}: {e:?}"),
            }
        }
        assert_eq!(winners, 1, "{name}");
        assert_eq!(live_reservations(&env, s, n(7)).await, 1, "{name}");
        assert_eq!(env.reservations_of_seat(s, n(7)).await.len(), 1, "{name}");
        assert_eq!(outbox_count(&env).await, before + 1, "{name}");
    }
}

async fn pay_refund_cancel_and_expire_end_to_end_under_every_control<H: Harness>() {
    let env = H::fresh().await;
    for control in controls() {
        let name = control.name().to_owned();
        let clock = TestClock::new();
        let s = schedule(&env, 500).await;
        let svc = services(&env, control, Policy::default(), &clock);
        let payer = user(100 + catalogue_size(&env).await.1);
        let before = env.outbox_types().await.len();

        let charge = ChargePoints {
            user: payer,
            amount: pts(2_000),
            idempotency: Some(key("top-up")),
        };
        assert_eq!(
            svc.points.charge(charge.clone()).await.unwrap().balance,
            2_000
        );
        assert_eq!(
            svc.points.charge(charge).await.unwrap().balance,
            2_000,
            "{name}"
        );

        let held = reserve(&svc, payer, s, n(1)).await.unwrap();
        let pay = PayReservation {
            user: payer,
            reservation: held.id,
            idempotency: Some(key("pay-1")),
        };
        let payment = svc.payments.pay(pay.clone()).await.unwrap();
        assert_eq!(svc.payments.pay(pay).await.unwrap(), payment, "{name}");
        assert!(matches!(
            svc.payments
                .pay(PayReservation {
                    user: payer,
                    reservation: held.id,
                    idempotency: None
                })
                .await,
            Err(PayError::AlreadyPaid)
        ));
        assert_eq!(
            stored_seat(&env, s, n(1)).await.unwrap().state,
            SeatState::Sold,
            "{name}"
        );
        assert_eq!(status(&env, held.id).await, ReservationStatus::Confirmed);
        assert_eq!(
            env.payments_of_reservation(held.id).await,
            vec![payment.clone()]
        );
        assert_eq!(svc.points.balance(payer).await.unwrap().balance, 1_500);
        assert_eq!(env.sold_seats_without_payment().await, 0);

        let refunded = svc.payments.refund(payer, payment.id).await.unwrap();
        assert_eq!(refunded.status, PaymentStatus::Refunded, "{name}");
        assert_eq!(svc.points.balance(payer).await.unwrap().balance, 2_000);
        assert_eq!(
            stored_seat(&env, s, n(1)).await.unwrap().state,
            SeatState::Available
        );
        assert_eq!(status(&env, held.id).await, ReservationStatus::Refunded);

        let second = reserve(&svc, payer, s, n(2)).await.unwrap();
        let cancelled = svc.reservations.cancel(payer, second.id).await.unwrap();
        assert_eq!(cancelled.status, ReservationStatus::Cancelled, "{name}");
        assert_eq!(
            stored_seat(&env, s, n(2)).await.unwrap().state,
            SeatState::Available
        );

        let third = reserve(&svc, payer, s, n(3)).await.unwrap();
        clock.advance(mins(6));
        assert!(
            svc.reservations.expire_stale().await.unwrap() >= 1,
            "{name}"
        );
        assert_eq!(status(&env, third.id).await, ReservationStatus::Expired);
        assert_eq!(
            stored_seat(&env, s, n(3)).await.unwrap().state,
            SeatState::Available
        );
        let history = balance_story(&env, payer).await;
        assert_eq!(
            history,
            [
                (PointKind::Refund, 2_000),
                (PointKind::Use, 1_500),
                (PointKind::Charge, 2_000)
            ],
            "{name}"
        );

        let types = env.outbox_types().await[before..].to_vec();
        assert_eq!(
            types,
            [
                EventType::PointsCharged,
                EventType::SeatHeld,
                EventType::ReservationConfirmed,
                EventType::PointsUsed,
                EventType::PaymentCompleted,
                EventType::PaymentRefunded,
                EventType::ReservationRefunded,
                EventType::PointsRefunded,
                EventType::SeatHeld,
                EventType::HoldCancelled,
                EventType::SeatHeld,
                EventType::HoldExpired,
            ]
            .map(|t| t.as_str().to_owned()),
            "{name}"
        );
    }
}

async fn fenced_uses_under_the_in_process_lock_all_succeed_and_record_their_token<H: Harness>() {
    let env = H::fresh().await;
    set_balance(&env, user(1), 10_000).await;
    let clock = TestClock::new();
    let control = Control::locked(
        "local",
        Arc::new(Ordered::plain(LocalLock::new())),
        LockOptions::default(),
    );
    let svc = services(&env, control, Policy::default(), &clock);
    let tasks = spawn_uses(&svc, 20);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        env.store().wallet(user(1)).await.unwrap().unwrap().balance,
        0
    );
    assert!(env.wallet_fence_token(user(1)).await > 0);
    assert_eq!(outbox_count(&env).await, 20);
}
