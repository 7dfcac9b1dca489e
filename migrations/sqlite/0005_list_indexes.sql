-- Indexes for the filters of GET /v1/calls and /v1/cdrs (issue 17: list routes at
-- 100,000 stored calls). Same as migrations/postgres/0005_list_indexes.sql.
--
-- `from` and `to` are matched one way at a time (exact, tel:, sip:, sips:), each way
-- walking the index newest first for one page: with the id in the index the walk needs
-- no table row until the page is known.
DROP INDEX calls_from_uri;
DROP INDEX calls_to_uri;
CREATE INDEX calls_from_uri ON calls (from_uri, id);
CREATE INDEX calls_to_uri ON calls (to_uri, id);
-- A status within a time window (`status=busy&since=…&until=…`): the window's calls of
-- that status only, not every call of the window, are collected and sorted by id.
CREATE INDEX calls_status_started_at ON calls (status, started_at);
