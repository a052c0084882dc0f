DROP TABLE IF EXISTS idempotency_keys;
DROP TABLE IF EXISTS point_history;
DROP TABLE IF EXISTS wallets;
