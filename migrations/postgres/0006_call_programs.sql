-- Call programs: prompts, IVR flows, queues, and what agents need for wrap-up. Same
-- schema as migrations/sqlite/0006_call_programs.sql. See docs/call-programs.md and
-- docs/queues.md.
--
-- Booleans are BIGINT 0/1 (the sqlx Any driver has no portable boolean).

CREATE TABLE prompts (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    format      TEXT NOT NULL,                  -- how the upload came: wav, mp3, ogg, flac
    duration_ms BIGINT NOT NULL,
    sample_rate BIGINT NOT NULL,               -- of the decoded audio kept at `path`
    path        TEXT,                           -- the decoded audio, under the data dir
    created_at  TEXT COLLATE "C" NOT NULL
);

CREATE TABLE ivr_flows (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    flow       TEXT NOT NULL,                   -- the flow JSON as validated (SPEC §6)
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE queues (
    id                   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name                 TEXT COLLATE "C" NOT NULL UNIQUE,
    strategy             TEXT NOT NULL CHECK (strategy IN ('round_robin', 'longest_idle', 'least_calls', 'ring_all')),
    required_skills      TEXT NOT NULL DEFAULT '[]',   -- JSON array of strings
    hold_prompt          TEXT COLLATE "C" REFERENCES prompts (id), -- the prompt's id; NULL: silence
    max_wait_seconds     BIGINT,                      -- NULL: wait for ever
    overflow_type        TEXT CHECK (overflow_type IN ('agent', 'queue', 'ivr', 'webhook')),
    overflow_target      TEXT,                         -- an id, or the webhook's URL
    announce_position    BIGINT NOT NULL DEFAULT 0,
    ring_timeout_seconds BIGINT NOT NULL DEFAULT 20,  -- an agent who does not answer is skipped
    created_at           TEXT COLLATE "C" NOT NULL,
    updated_at           TEXT COLLATE "C" NOT NULL
);

-- Until when an agent is in wrap-up after a call (NULL: not); set by the engine.
ALTER TABLE agents ADD COLUMN wrap_up_until TEXT COLLATE "C";
