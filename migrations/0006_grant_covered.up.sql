-- Units of a meter's overage that grants (topups) paid for, synced with each delta
-- (wire.UsageDelta.grant_covered) and summed per meter period by the worker, so an
-- invoice credits what grants paid for exactly as the engine's margins do. Rows from
-- before this column, and SDKs that do not send it, count as 0.
alter table usage_deltas add column grant_covered numeric not null default 0;
alter table meter_aggregates add column grant_covered numeric not null default 0;
