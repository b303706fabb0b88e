-- emotion-sync migration 3: the gateways' audit trail.
--
-- Every read of a user's data, export, consent change, erasure and
-- administrative action on a gateway, with who did it and what came of it.
-- user_id leads the key like every per-user table; actions on no user (an
-- export of everyone, pairing a device) have user_id ''. A row is written once
-- (its audit_id is the gateway's), so a re-sent page is a no-op.
-- An erasure does not delete these rows: they are the record that it happened.
CREATE TABLE audit_log (
    user_id    text        NOT NULL,
    gateway_id text        NOT NULL,
    audit_id   uuid        NOT NULL,
    at         timestamptz NOT NULL,
    principal  text        NOT NULL,
    action     text        NOT NULL,
    outcome    text        NOT NULL,
    synced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, gateway_id, audit_id)
);
CREATE INDEX audit_log_at ON audit_log (at);
