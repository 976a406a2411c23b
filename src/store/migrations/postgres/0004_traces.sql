-- The trace each event continues (W3C `traceparent` text), and the span under
-- which each job was started (its own span id is derived from its id and run).
ALTER TABLE events ADD COLUMN traceparent TEXT;
ALTER TABLE jobs ADD COLUMN traceparent TEXT;
