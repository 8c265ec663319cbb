-- Usage synced from SDK instances. A batch is identified by (instance_id, sequence) and
-- committed at most once; its deltas are folded into meter_aggregates exactly once by
-- the worker, in the same transaction that marks them aggregated.
create table usage_batches (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    instance_id     text not null,
    sequence        bigint not null check (sequence > 0),
    deltas          int not null,
    events          int not null default 0,
    policy_version  int not null default 0,
    sent_at         timestamptz,
    received_at     timestamptz not null default now(),
    primary key (tenant_id, environment_id, instance_id, sequence),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);

-- Partitioned by arrival time so old usage can be detached and archived by day.
create table usage_deltas (
    id              bigint generated always as identity,
    received_at     timestamptz not null default now(),
    tenant_id       uuid not null,
    environment_id  uuid not null,
    instance_id     text not null,
    sequence        bigint not null,
    customer_id     text not null,
    entitlement     text not null,
    credit          text not null,
    period_start    timestamptz not null,
    units           numeric not null,
    overhead        numeric not null,
    price           numeric not null,
    calls           bigint not null check (calls >= 0),
    aggregated_at   timestamptz,
    primary key (received_at, id)
) partition by range (received_at);
create table usage_deltas_default partition of usage_deltas default;
-- The worker's queue: unaggregated rows in arrival order.
create index usage_deltas_pending on usage_deltas (received_at, id) where aggregated_at is null;
-- Hydration adds the not-yet-aggregated usage of a meter to its aggregate.
create index usage_deltas_meter_pending on usage_deltas (tenant_id, environment_id, customer_id, entitlement, period_start)
    where aggregated_at is null;

create table meter_aggregates (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    customer_id     text not null,
    entitlement     text not null,
    period_start    timestamptz not null,
    credit          text not null,
    units           numeric not null default 0,
    overhead        numeric not null default 0,
    price           numeric not null default 0,
    calls           bigint not null default 0,
    updated_at      timestamptz not null default now(),
    primary key (tenant_id, environment_id, customer_id, entitlement, period_start)
);

-- Raw per-call records, sent by SDKs in audit mode.
create table usage_events (
    received_at     timestamptz not null default now(),
    tenant_id       uuid not null,
    environment_id  uuid not null,
    instance_id     text not null,
    event_id        text not null,
    customer_id     text not null,
    caller_id       text not null default '',
    entitlement     text not null,
    units           numeric not null,
    overhead        numeric not null,
    allowed         boolean not null,
    at              timestamptz not null,
    primary key (received_at, tenant_id, environment_id, instance_id, event_id)
) partition by range (received_at);
create table usage_events_default partition of usage_events default;
