-- voxgate schema, SQLite flavour. migrations/postgres/ holds the same schema with the
-- same numbering; keep them in step.
--
-- Times are TEXT holding RFC 3339 UTC with one fixed format, 'YYYY-MM-DDTHH:MM:SS.mmmZ'
-- (e.g. '2026-11-23T10:00:00.000Z'), on both backends. The sqlx Any driver has no portable
-- timestamp type, and fixed-width UTC text sorts lexically in time order, so comparisons
-- (expires_at <= now) and ORDER BY behave the same on SQLite and PostgreSQL.
--
-- Ids are '<prefix>_<26 Crockford base32 chars>' (ms timestamp + random, see src/ids.rs):
-- ORDER BY id is creation order and 'id > $after' is the pagination cursor.

CREATE TABLE api_keys (
    id           TEXT NOT NULL PRIMARY KEY,
    name         TEXT NOT NULL,
    key_prefix   TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,   -- hex SHA-256 of the key; the key itself is never stored
    created_at   TEXT NOT NULL,
    last_used_at TEXT
);

CREATE TABLE agents (
    id                   TEXT NOT NULL PRIMARY KEY,
    username             TEXT NOT NULL UNIQUE,
    display_name         TEXT,
    ha1_md5              TEXT NOT NULL,  -- hex MD5("username:realm:password"), RFC 2617
    ha1_sha256           TEXT NOT NULL,  -- hex SHA-256 of the same, RFC 8760
    realm                TEXT NOT NULL,
    skills               TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
    max_concurrent_calls INTEGER NOT NULL DEFAULT 1,
    wrap_up_seconds      INTEGER NOT NULL DEFAULT 0,
    presence             TEXT NOT NULL DEFAULT 'available' CHECK (presence IN ('available', 'away')),
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);

CREATE TABLE registrations (
    id         TEXT NOT NULL PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    contact    TEXT NOT NULL,
    transport  TEXT NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls', 'ws', 'wss')),
    source     TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    user_agent TEXT,
    call_id    TEXT NOT NULL,
    cseq       INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (agent_id, contact)
);

CREATE INDEX registrations_expires_at ON registrations (expires_at);
