-- Concerts, their dated schedules, and 50 numbered seats per schedule.
-- Times are UTC, written by the application (never NOW()), so tests control time.

CREATE TABLE concerts (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    title VARCHAR(200) NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE schedules (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    concert_id BIGINT UNSIGNED NOT NULL,
    starts_at DATETIME(6) NOT NULL,
    PRIMARY KEY (id),
    KEY ix_schedules_concert_starts (concert_id, starts_at),
    CONSTRAINT fk_schedules_concert FOREIGN KEY (concert_id) REFERENCES concerts (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- status: AVAILABLE | HELD (held_by until held_until) | SOLD (held_by = buyer).
-- version: bumped by every write (optimistic check).
-- fence_token: the highest distributed-lock fencing token that wrote the row.
CREATE TABLE seats (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    schedule_id BIGINT UNSIGNED NOT NULL,
    number TINYINT UNSIGNED NOT NULL,
    price BIGINT UNSIGNED NOT NULL,
    status VARCHAR(16) NOT NULL DEFAULT 'AVAILABLE',
    held_by BIGINT UNSIGNED NULL,
    held_until DATETIME(6) NULL,
    version BIGINT UNSIGNED NOT NULL DEFAULT 0,
    fence_token BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (id),
    UNIQUE KEY uq_seats_schedule_number (schedule_id, number),
    CONSTRAINT fk_seats_schedule FOREIGN KEY (schedule_id) REFERENCES schedules (id),
    CONSTRAINT ck_seats_status CHECK (status IN ('AVAILABLE', 'HELD', 'SOLD')),
    CONSTRAINT ck_seats_number CHECK (number BETWEEN 1 AND 50),
    CONSTRAINT ck_seats_price CHECK (price > 0),
    CONSTRAINT ck_seats_hold CHECK (status <> 'HELD' OR (held_by IS NOT NULL AND held_until IS NOT NULL))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
