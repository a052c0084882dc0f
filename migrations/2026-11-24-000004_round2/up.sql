-- Round 2: cancelled and refunded reservations, refundable payments, refund
-- history lines, request fingerprints on idempotency keys, a lock row per
-- user and schedule for the hold limit, and the transactional outbox.

-- A reservation may now be cancelled by its holder or refunded after payment.
-- live_seat_id (HELD or CONFIRMED only) is unchanged: neither is live.
ALTER TABLE reservations DROP CONSTRAINT ck_reservations_status;
ALTER TABLE reservations ADD CONSTRAINT ck_reservations_status
    CHECK (status IN ('HELD', 'CONFIRMED', 'EXPIRED', 'CANCELLED', 'REFUNDED'));
-- Counting a user's live holds on one schedule (the hold limit).
ALTER TABLE reservations ADD KEY ix_reservations_user_schedule (user_id, schedule_id, status, expires_at);

-- A payment is PAID until it is refunded.
ALTER TABLE payments ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT 'PAID';
ALTER TABLE payments ADD CONSTRAINT ck_payments_status CHECK (status IN ('PAID', 'REFUNDED'));

-- A refund gives a payment's price back to the wallet.
ALTER TABLE point_history DROP CONSTRAINT ck_point_history_kind;
ALTER TABLE point_history ADD CONSTRAINT ck_point_history_kind
    CHECK (kind IN ('CHARGE', 'USE', 'REFUND'));

-- Keys of up to 255 visible ASCII characters, and the fingerprint of the
-- request that first used the key (NULL for keys recorded before this
-- migration: they match any request).
ALTER TABLE idempotency_keys
    MODIFY idem_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
ALTER TABLE idempotency_keys ADD COLUMN request VARCHAR(255) NULL;

-- One row per user and schedule, written (and so locked) by every hold of
-- that user on that schedule before it counts the user's live holds: two
-- concurrent holds of one user queue instead of both passing the limit.
CREATE TABLE hold_locks (
    user_id BIGINT UNSIGNED NOT NULL,
    schedule_id BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (user_id, schedule_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Domain events, written in the transaction of the change they describe and
-- published from here once committed (published_at set by the relay).
-- event_id is a UUID v4; payload is the event's JSON payload.
CREATE TABLE outbox (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    event_id CHAR(36) CHARACTER SET ascii NOT NULL,
    stream VARCHAR(32) NOT NULL,
    event_type VARCHAR(64) NOT NULL,
    aggregate VARCHAR(64) NOT NULL,
    payload JSON NOT NULL,
    created_at DATETIME(6) NOT NULL,
    published_at DATETIME(6) NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_outbox_event_id (event_id),
    -- "the oldest unpublished first": WHERE published_at IS NULL ORDER BY id
    KEY ix_outbox_unpublished (published_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
