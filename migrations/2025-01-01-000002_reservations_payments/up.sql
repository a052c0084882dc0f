-- Holds on seats and the payments that confirm them.

-- live_seat_id is the seat while the reservation is live (HELD or CONFIRMED)
-- and NULL otherwise; its unique index makes two live reservations of one
-- seat impossible in the database itself (MySQL has no partial index).
CREATE TABLE reservations (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    seat_id BIGINT UNSIGNED NOT NULL,
    schedule_id BIGINT UNSIGNED NOT NULL,
    seat_number TINYINT UNSIGNED NOT NULL,
    user_id BIGINT UNSIGNED NOT NULL,
    price BIGINT UNSIGNED NOT NULL,
    status VARCHAR(16) NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    created_at DATETIME(6) NOT NULL,
    live_seat_id BIGINT UNSIGNED AS (CASE WHEN status IN ('HELD', 'CONFIRMED') THEN seat_id END) STORED,
    PRIMARY KEY (id),
    UNIQUE KEY uq_reservations_live_seat (live_seat_id),
    KEY ix_reservations_seat (seat_id),
    KEY ix_reservations_user (user_id),
    KEY ix_reservations_status_expires (status, expires_at),
    CONSTRAINT fk_reservations_seat FOREIGN KEY (seat_id) REFERENCES seats (id),
    CONSTRAINT ck_reservations_status CHECK (status IN ('HELD', 'CONFIRMED', 'EXPIRED'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- At most one payment per reservation.
CREATE TABLE payments (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    reservation_id BIGINT UNSIGNED NOT NULL,
    user_id BIGINT UNSIGNED NOT NULL,
    amount BIGINT UNSIGNED NOT NULL,
    paid_at DATETIME(6) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_payments_reservation (reservation_id),
    KEY ix_payments_user (user_id),
    CONSTRAINT fk_payments_reservation FOREIGN KEY (reservation_id) REFERENCES reservations (id),
    CONSTRAINT ck_payments_amount CHECK (amount > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
