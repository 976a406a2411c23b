-- Which control plane a tenant answers to: NULL (ARC SaaS: the signed webhook) or
-- 'sbt' (sbt-aws: events put on the control plane's bus).
ALTER TABLE tenants ADD COLUMN control_plane TEXT;
