-- Point wallets, their append-only history, and idempotency keys.

-- The balance can never go negative, whatever the application does.
CREATE TABLE wallets (
    user_id BIGINT UNSIGNED NOT NULL,
    balance BIGINT NOT NULL DEFAULT 0,
    version BIGINT UNSIGNED NOT NULL DEFAULT 0,
    fence_token BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id),
    CONSTRAINT ck_wallets_balance CHECK (balance >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- balance_after: the wallet's balance right after this change.
CREATE TABLE point_history (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id BIGINT UNSIGNED NOT NULL,
    kind VARCHAR(8) NOT NULL,
    amount BIGINT UNSIGNED NOT NULL,
    balance_after BIGINT UNSIGNED NOT NULL,
    created_at DATETIME(6) NOT NULL,
    PRIMARY KEY (id),
    KEY ix_point_history_user (user_id, id),
    CONSTRAINT fk_point_history_wallet FOREIGN KEY (user_id) REFERENCES wallets (user_id),
    CONSTRAINT ck_point_history_kind CHECK (kind IN ('CHARGE', 'USE')),
    CONSTRAINT ck_point_history_amount CHECK (amount > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- A client's Idempotency-Key per user and operation, with the first result:
-- the balance a charge answered, or the payment a payment made. Keys are
-- compared byte for byte (ascii_bin). repeats counts the requests answered
-- from the stored result.
CREATE TABLE idempotency_keys (
    user_id BIGINT UNSIGNED NOT NULL,
    scope VARCHAR(16) NOT NULL,
    idem_key VARCHAR(100) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    result_balance BIGINT UNSIGNED NULL,
    payment_id BIGINT UNSIGNED NULL,
    repeats INT UNSIGNED NOT NULL DEFAULT 0,
    created_at DATETIME(6) NOT NULL,
    PRIMARY KEY (user_id, scope, idem_key),
    CONSTRAINT ck_idempotency_keys_scope CHECK (scope IN ('CHARGE', 'PAYMENT'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
