-- The gateway's state (tenancy, dopu, audit) as ordered buckets of byte
-- keys: the same model the single-node bbolt file has, so both databases
-- run the same code (see internal/kv). bytea compares byte by byte, which is
-- the order cursors walk.
CREATE TABLE pfr_kv (
    bucket text  NOT NULL,
    key    bytea NOT NULL,
    value  bytea NOT NULL,
    PRIMARY KEY (bucket, key)
);

-- One sequence per bucket; it is a row, not a PostgreSQL SEQUENCE, so that
-- it rolls back with the transaction as bbolt's NextSequence does.
CREATE TABLE pfr_kv_sequences (
    bucket text   PRIMARY KEY,
    value  bigint NOT NULL
);
