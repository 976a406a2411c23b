-- Running local jobs carry a lease their process renews; a job whose lease
-- ended lost its process (crash, kill -9) and is re-run by whoever takes it.
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
