-- Numbers record their calls (SPEC §4: numbers take `record` and `recording_channels`).
-- NULL: not recorded; otherwise the recording's channels. Same as
-- migrations/sqlite/0009_number_recording.sql. (0008 belongs to the list speed-ups.)
ALTER TABLE numbers ADD COLUMN record TEXT CHECK (record IN ('mono', 'dual'));
