-- Webhooks (SPEC §5): subscriptions, the outbox of events to deliver, and the log of
-- delivery attempts. Same schema as migrations/sqlite/0003_webhooks.sql.
--
-- An outbox row is one event for one destination: a webhook (`webhook_id`, deleted with
-- it) or a call's status_callback URL (`webhook_id` NULL). It is written in the same
-- transaction as the state change it reports. Rows of one (`target`, `order_key`) chain
-- (a call's events to one destination) are delivered in id order: a row waits while an
-- older row of its chain is still `pending`.

CREATE TABLE webhooks (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,           -- JSON array of patterns: "call.*", "*", "agent.state_changed"
    secret      TEXT NOT NULL,           -- HMAC-SHA256 key of Voxgate-Signature
    description TEXT,
    created_at  TEXT COLLATE "C" NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL
);

CREATE TABLE webhook_events (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,   -- evt_…, the envelope's id
    type            TEXT NOT NULL,
    created_at      TEXT COLLATE "C" NOT NULL,
    payload         TEXT NOT NULL,               -- the envelope, exactly the body sent
    webhook_id      TEXT COLLATE "C" REFERENCES webhooks (id) ON DELETE CASCADE,
    target          TEXT COLLATE "C" NOT NULL,               -- the webhook id, or the status_callback URL
    order_key       TEXT COLLATE "C",                        -- e.g. the call id; NULL: unordered
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT COLLATE "C" NOT NULL,
    lease_owner     TEXT,
    lease_until     TEXT COLLATE "C",
    last_error      TEXT,
    updated_at      TEXT COLLATE "C" NOT NULL
);

-- Due rows for the workers; the chain index finds an older pending row of the same chain.
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_events_chain ON webhook_events (target, order_key, id) WHERE state = 'pending';
CREATE INDEX webhook_events_webhook ON webhook_events (webhook_id);
-- Finished events, pruned after a retention period (src/webhooks/mod.rs).
CREATE INDEX webhook_events_done ON webhook_events (updated_at) WHERE state <> 'pending';

CREATE TABLE webhook_deliveries (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,       -- dlv_…
    event_id    TEXT COLLATE "C" NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    webhook_id  TEXT COLLATE "C" REFERENCES webhooks (id) ON DELETE CASCADE,
    event_type  TEXT NOT NULL,
    url         TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    status_code BIGINT,                         -- NULL: no HTTP answer (timeout, refused)
    error       TEXT,                            -- NULL on success
    duration_ms BIGINT NOT NULL,
    at          TEXT COLLATE "C" NOT NULL
);

CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

-- Process-wide settings kept in the database (the generated status_callback secret).
CREATE TABLE settings (
    key   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

-- A call's own webhook URL (its call.* events); metadata exists since 0002.
ALTER TABLE calls ADD COLUMN status_callback TEXT;
