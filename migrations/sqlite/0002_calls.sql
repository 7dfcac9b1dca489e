-- Call records (CDRs) and their legs. Same schema as migrations/postgres/0002_calls.sql.
--
-- A call is written from its first INVITE and updated as it progresses; rows are never
-- deleted by call cleanup (SPEC §4 cdrs). Agents may be deleted while their calls stay:
-- agent_id then becomes NULL. Statuses are SPEC §4's; 'queued', 'ringing' and
-- 'in-progress' are the open ones, every other status is final.

CREATE TABLE calls (
    id               TEXT NOT NULL PRIMARY KEY,
    direction        TEXT NOT NULL,
    from_uri         TEXT NOT NULL,
    to_uri           TEXT NOT NULL,
    agent_id         TEXT REFERENCES agents (id) ON DELETE SET NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'ringing', 'in-progress',
                         'completed', 'busy', 'failed', 'no-answer', 'canceled')),
    started_at       TEXT NOT NULL,
    answered_at      TEXT,
    ended_at         TEXT,
    duration_seconds INTEGER,
    hangup_cause     TEXT,
    hangup_by        TEXT,
    metadata         TEXT,           -- JSON, free-form from the API caller
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE INDEX calls_status ON calls (status, id);
CREATE INDEX calls_agent_id ON calls (agent_id, id);
CREATE INDEX calls_started_at ON calls (started_at);
CREATE INDEX calls_from_uri ON calls (from_uri);
CREATE INDEX calls_to_uri ON calls (to_uri);
-- Open calls: start-up closes orphans, agent state counts live calls.
CREATE INDEX calls_open ON calls (agent_id) WHERE status IN ('queued', 'ringing', 'in-progress');

CREATE TABLE legs (
    id           TEXT NOT NULL PRIMARY KEY,
    call_id      TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    direction    TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    agent_id     TEXT REFERENCES agents (id) ON DELETE SET NULL,
    uri          TEXT NOT NULL,
    sip_call_id  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'ringing', 'in-progress',
                     'completed', 'busy', 'failed', 'no-answer', 'canceled')),
    started_at   TEXT NOT NULL,
    answered_at  TEXT,
    ended_at     TEXT,
    hangup_cause TEXT
);

CREATE INDEX legs_call_id ON legs (call_id, id);
CREATE INDEX legs_agent_id ON legs (agent_id, call_id);
CREATE INDEX legs_open ON legs (agent_id) WHERE status IN ('queued', 'ringing', 'in-progress');
