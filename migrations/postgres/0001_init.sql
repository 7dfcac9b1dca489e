-- voxgate schema, PostgreSQL flavour. migrations/sqlite/ holds the same schema with the
-- same numbering; keep them in step.
--
-- Times are TEXT holding RFC 3339 UTC with one fixed format, 'YYYY-MM-DDTHH:MM:SS.mmmZ'
-- (e.g. '2026-11-23T10:00:00.000Z'), on both backends. The sqlx Any driver has no portable
-- timestamp type, and fixed-width UTC text sorts lexically in time order, so comparisons
-- (expires_at <= now) and ORDER BY behave the same on SQLite and PostgreSQL.
-- Sortable text columns use COLLATE "C" so ordering is byte-wise, as in SQLite.
--
-- Ids are '<prefix>_<26 Crockford base32 chars>' (ms timestamp + random, see src/ids.rs):
-- ORDER BY id is creation order and 'id > $after' is the pagination cursor.

CREATE TABLE api_keys (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name         TEXT NOT NULL,
    key_prefix   TEXT NOT NULL,
    key_hash     TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at   TEXT COLLATE "C" NOT NULL,
    last_used_at TEXT COLLATE "C"
);

CREATE TABLE agents (
    id                   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    username             TEXT COLLATE "C" NOT NULL UNIQUE,
    display_name         TEXT,
    ha1_md5              TEXT NOT NULL,
    ha1_sha256           TEXT NOT NULL,
    realm                TEXT NOT NULL,
    skills               TEXT NOT NULL DEFAULT '[]',
    max_concurrent_calls BIGINT NOT NULL DEFAULT 1,
    wrap_up_seconds      BIGINT NOT NULL DEFAULT 0,
    presence             TEXT NOT NULL DEFAULT 'available' CHECK (presence IN ('available', 'away')),
    created_at           TEXT COLLATE "C" NOT NULL,
    updated_at           TEXT COLLATE "C" NOT NULL
);

CREATE TABLE registrations (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    agent_id   TEXT COLLATE "C" NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    contact    TEXT COLLATE "C" NOT NULL,
    transport  TEXT NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls', 'ws', 'wss')),
    source     TEXT NOT NULL,
    expires_at TEXT COLLATE "C" NOT NULL,
    user_agent TEXT,
    call_id    TEXT NOT NULL,
    cseq       BIGINT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    UNIQUE (agent_id, contact)
);

CREATE INDEX registrations_expires_at ON registrations (expires_at);
