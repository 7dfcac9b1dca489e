-- GET /v1/calls?status=…&since=…&until=… (issue 17: list routes at 100,000 stored calls).
-- Same as migrations/sqlite/0008_status_window_index.sql.
--
-- A status within a time window walks that status's calls newest first, as the page is
-- ordered, and checks started_at in the index itself: no table row is read until it
-- matches, and nothing is sorted. With (status, id) alone, PostgreSQL walked the primary
-- key instead and read every newer call's row (10 ms, 35,000 rows skipped, for a 10-day
-- window in the middle of 100,000 calls), and SQLite took the started_at index and
-- sorted the window's matches by id (13 ms; it still prefers that range, so the list
-- query keeps it off it: src/store/calls.rs); now both take under a millisecond.
-- calls_status_started_at (0005) stays for narrow windows far in the past, where sorting
-- the few matches beats walking every newer call of the status.
DROP INDEX calls_status;
CREATE INDEX calls_status ON calls (status, id, started_at);
