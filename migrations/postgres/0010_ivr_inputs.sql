-- Every input a call program gathered, in the call's record (SPEC §6: "Every input
-- lands in the call's record and fires ivr.input"). `data` is the ivr.input payload
-- (node, digits, variable, result, attempt, at) as JSON; `seq` orders a call's inputs.
-- Same as migrations/sqlite/0010_ivr_inputs.sql.
CREATE TABLE call_ivr_inputs (
    call_id TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (call_id, seq)
);
