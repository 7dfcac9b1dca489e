-- Call recordings: one row per recording, the audio in a file under the data dir (or,
-- later, an S3-compatible store). Same schema as migrations/sqlite/0007_recordings.sql.
-- (0005 and 0006 belong to the list indexes and the call programs.)
--
-- `path` is the object's key, relative to the storage root: recordings/YYYY/MM/DD/<id>.wav.
-- A row is written when recording starts (status 'recording'), so a recording cut short
-- by a crash is still listed and its file repaired at start-up; `duration_ms` and
-- `size_bytes` are set when it completes.

CREATE TABLE recordings (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    call_id     TEXT COLLATE "C" NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    agent_id    TEXT COLLATE "C" REFERENCES agents (id) ON DELETE SET NULL,
    channels    TEXT NOT NULL CHECK (channels IN ('mono', 'dual')),
    status      TEXT NOT NULL CHECK (status IN ('recording', 'paused', 'completed', 'failed')),
    storage     TEXT NOT NULL DEFAULT 'local' CHECK (storage IN ('local', 's3')),
    path        TEXT NOT NULL,
    sample_rate BIGINT NOT NULL,
    duration_ms BIGINT,
    size_bytes  BIGINT,
    started_at  TEXT COLLATE "C" NOT NULL,
    ended_at    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE INDEX recordings_call_id ON recordings (call_id, id);
CREATE INDEX recordings_agent_id ON recordings (agent_id, id);
CREATE INDEX recordings_started_at ON recordings (started_at, id);
