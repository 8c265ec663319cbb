-- A customer deleted and created again under the same id is a new customer: every
-- customer row gets an immutable uid, and usage is kept per uid. Enforcement reads
-- (hydration, fleet refresh) see only the current uid's usage, so a re-created customer
-- starts at zero; the deleted one's usage stays for billing and audit.
alter table customers add column uid uuid not null default gen_random_uuid();
alter table customers add constraint customers_uid_key unique (uid);

-- Existing usage: attributed to the customer that holds the id now; usage of ids with
-- no customer any more gets a uid derived from (tenant, environment, id), the same in
-- every table.
create function pg_temp.orphan_uid(t uuid, e uuid, id text) returns uuid
    language sql immutable as $$ select md5(t::text || ':' || e::text || ':' || id)::uuid $$;

alter table usage_deltas add column customer_uid uuid;
update usage_deltas d set customer_uid = coalesce(
    (select c.uid from customers c where c.tenant_id = d.tenant_id and c.environment_id = d.environment_id and c.id = d.customer_id),
    pg_temp.orphan_uid(d.tenant_id, d.environment_id, d.customer_id));
alter table usage_deltas alter column customer_uid set not null;
drop index usage_deltas_meter_pending;
create index usage_deltas_meter_pending on usage_deltas (customer_uid, entitlement, period_start)
    where aggregated_at is null;

alter table meter_aggregates add column customer_uid uuid;
update meter_aggregates m set customer_uid = coalesce(
    (select c.uid from customers c where c.tenant_id = m.tenant_id and c.environment_id = m.environment_id and c.id = m.customer_id),
    pg_temp.orphan_uid(m.tenant_id, m.environment_id, m.customer_id));
alter table meter_aggregates alter column customer_uid set not null;
alter table meter_aggregates drop constraint meter_aggregates_pkey;
alter table meter_aggregates add primary key (customer_uid, entitlement, period_start);
create index meter_aggregates_customer on meter_aggregates (tenant_id, environment_id, customer_id);

alter table grant_draw_totals add column customer_uid uuid;
update grant_draw_totals g set customer_uid = coalesce(
    (select c.uid from customers c where c.tenant_id = g.tenant_id and c.environment_id = g.environment_id and c.id = g.customer_id),
    pg_temp.orphan_uid(g.tenant_id, g.environment_id, g.customer_id));
alter table grant_draw_totals alter column customer_uid set not null;
alter table grant_draw_totals drop constraint grant_draw_totals_pkey;
alter table grant_draw_totals add primary key (customer_uid, grant_id, period_start);

alter table usage_events add column customer_uid uuid;

-- Deleted customers: the record as it was (profile, overrides, topups) and when it
-- ended, for billing and audit. Its usage stays under its uid.
create table deleted_customers (
    uid             uuid primary key,
    tenant_id       uuid not null,
    environment_id  uuid not null,
    id              text not null,
    record          jsonb not null,
    created_at      timestamptz not null,
    deleted_at      timestamptz not null default now(),
    deleted_by      uuid,
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create index deleted_customers_id on deleted_customers (tenant_id, environment_id, id, deleted_at desc);

-- Usage records of a committed batch that name no customer of the environment (deleted,
-- never created on the server, or re-created since the usage was recorded). The batch's
-- other records are committed; these are kept here for an operator, never dropped.
create table unattributed_usage (
    id              bigserial primary key,
    tenant_id       uuid not null,
    environment_id  uuid not null,
    instance_id     text not null,
    sequence        bigint not null,
    kind            text not null check (kind in ('delta', 'grant_draw', 'event')),
    index           int not null,
    customer        text not null,
    reason          text not null,
    record          jsonb not null,
    received_at     timestamptz not null default now(),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create index unattributed_usage_env on unattributed_usage (tenant_id, environment_id, id desc);
create index unattributed_usage_received on unattributed_usage (received_at);

-- How far retention has removed an environment's change feed: a stream resuming from
-- an older cursor is told to resynchronise instead of silently missing changes.
create table change_feed_horizon (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    purged_through  bigint not null,
    updated_at      timestamptz not null default now(),
    primary key (tenant_id, environment_id),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create index change_feed_created on change_feed (created_at);
create index usage_batches_received on usage_batches (received_at);
create index audit_log_at on audit_log (at);
