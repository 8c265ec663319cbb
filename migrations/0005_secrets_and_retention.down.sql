drop table if exists retention_horizons;
-- Sealed bodies cannot be read back without the keyring: they are dropped with it.
update idempotency_keys set body = null where sealed;
alter table idempotency_keys drop column withheld;
alter table idempotency_keys drop column sealed;
