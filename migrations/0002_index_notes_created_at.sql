-- Index notes by creation time, for the newest-first listing.
-- @up
CREATE INDEX ix_notes_created_at ON notes (created_at);

-- @down
DROP INDEX ix_notes_created_at;
