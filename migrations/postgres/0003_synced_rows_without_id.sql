-- The few synced rows the destination never gave a record id for. A plan with removals
-- counts the requests they will take without looking every removed row up, and a removal
-- cannot reach a row without an id; this index holds only those rows, so keeping it costs
-- nothing for the rest and reading it is a scan of (usually) nothing.
CREATE INDEX synced_rows_without_id ON synced_rows (sync, key_hash) WHERE record_id IS NULL;
