-- Caddy's certificate storage shared by every node (caddy.storage.postgres):
-- certificates, keys, ACME account data and OCSP staples by key path.
CREATE TABLE pfr_certs (
    key      text        PRIMARY KEY,
    value    bytea       NOT NULL,
    modified timestamptz NOT NULL DEFAULT now()
);

-- Cluster locks (certmagic's Locker): held by token until expires; a
-- holder keeps renewing it, so a lock of a node that died runs out.
CREATE TABLE pfr_cert_locks (
    name    text        PRIMARY KEY,
    token   text        NOT NULL,
    expires timestamptz NOT NULL
);
