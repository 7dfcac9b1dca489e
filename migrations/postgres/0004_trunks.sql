-- Carrier trunks, inbound numbers, and what a call cost. Same schema as
-- migrations/sqlite/0004_trunks.sql; sortable and compared text columns use COLLATE "C".
-- See docs/trunks.md.
--
-- Booleans are BIGINT 0/1 (the sqlx Any driver has no portable boolean). Money is an
-- integer count of micro-units of its currency (1 USD = 1000000), never a float.
-- Passwords are kept as given: voxgate answers the carrier's digest challenges with them
-- (and checks a carrier's credentials against them), so it cannot keep only a hash.

CREATE TABLE trunks (
    id                     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name                   TEXT COLLATE "C" NOT NULL UNIQUE,
    provider               TEXT NOT NULL CHECK (provider IN ('twilio', 'plivo', 'exotel', 'generic', 'simulated')),
    outbound_host          TEXT,
    outbound_port          BIGINT,
    outbound_transport     TEXT NOT NULL CHECK (outbound_transport IN ('udp', 'tcp', 'tls')),
    outbound_username      TEXT,
    outbound_password      TEXT,
    register               BIGINT NOT NULL DEFAULT 0,
    register_expires       BIGINT,
    inbound_allowed_cidrs  TEXT NOT NULL DEFAULT '[]',   -- JSON array of CIDRs
    inbound_username       TEXT,
    inbound_password       TEXT,
    codecs                 TEXT NOT NULL DEFAULT '[]',   -- JSON array of codec names
    max_cps                BIGINT,
    max_calls_per_minute   BIGINT,
    max_concurrent_calls   BIGINT,
    number_format          TEXT NOT NULL CHECK (number_format IN ('e164', 'in_national')),
    caller_id              TEXT,
    country_code           TEXT,
    rate_per_minute_micros BIGINT,
    rate_currency          TEXT,
    rate_increment_seconds BIGINT,
    rate_minimum_seconds   BIGINT,
    simulate               TEXT NOT NULL DEFAULT '[]',   -- JSON array of rules (simulated provider)
    default_outbound       BIGINT NOT NULL DEFAULT 0,
    created_at             TEXT COLLATE "C" NOT NULL,
    updated_at             TEXT COLLATE "C" NOT NULL
);

-- At most one trunk carries the default_outbound flag.
CREATE UNIQUE INDEX trunks_one_default ON trunks (default_outbound) WHERE default_outbound = 1;

CREATE TABLE numbers (
    number       TEXT COLLATE "C" NOT NULL PRIMARY KEY,   -- E.164, '+' and digits
    trunk_id     TEXT COLLATE "C" NOT NULL REFERENCES trunks (id),
    route_type   TEXT NOT NULL CHECK (route_type IN ('agent', 'queue', 'ivr', 'webhook', 'masking')),
    route_target TEXT NOT NULL,                            -- for 'agent': the agent's id
    created_at   TEXT COLLATE "C" NOT NULL,
    updated_at   TEXT COLLATE "C" NOT NULL
);

CREATE INDEX numbers_trunk_id ON numbers (trunk_id);

ALTER TABLE calls ADD COLUMN trunk_id TEXT COLLATE "C" REFERENCES trunks (id) ON DELETE SET NULL;
ALTER TABLE calls ADD COLUMN cost BIGINT;        -- micro-units of currency
ALTER TABLE calls ADD COLUMN currency TEXT;

CREATE INDEX calls_trunk_id ON calls (trunk_id, id);
