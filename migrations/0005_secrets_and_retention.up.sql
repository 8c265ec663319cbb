-- Idempotent replies can hold a secret shown once (a new API key): their bodies are
-- sealed with the server's keyring (LIMITR_SECRET_KEY) from now on. Replies stored in
-- plaintext before are scrubbed: a retry with their key learns the request completed,
-- and is not run again.
alter table idempotency_keys add column sealed boolean not null default false;
alter table idempotency_keys add column withheld boolean not null default false;
update idempotency_keys set body = null, withheld = true where status is not null;

-- How far retention has removed rows whose absence matters to readers: for
-- usage_batches, a batch first sent before `before` can no longer be recognised as a
-- retry.
create table retention_horizons (
    name        text primary key,
    before      timestamptz not null,
    updated_at  timestamptz not null default now()
);
