-- Allowance leases (fleet mode Exact): the share of a meter's remaining allowance the
-- server granted each SDK instance in a period. One row per instance and meter period;
-- the meter is keyed as meter_aggregates keys it (the canonical customer id; the
-- customer's uid tells a re-created customer's leases from its predecessor's).
--   granted    cumulative allowance granted to the instance in the period
--   used       what the instance last said it used under the lease
--   committed  what the server committed from the instance's leased usage batches
--   lim        the limit the instance last asked with
-- Grants of one meter serialize on an advisory lock (internal/leases); a leased usage
-- batch adds its units to committed in the transaction that commits it. Rows expired
-- for more than a day are removed by the data-retention job.
create table fleet_leases (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    customer_id     text not null,
    customer_uid    uuid not null,
    entitlement     text not null,
    period_start    timestamptz not null,
    instance_id     text not null,
    granted         numeric not null default 0,
    used            numeric not null default 0,
    committed       numeric not null default 0,
    lim             numeric not null default 0,
    expires_at      timestamptz not null,
    updated_at      timestamptz not null default now(),
    primary key (tenant_id, environment_id, customer_id, entitlement, period_start, instance_id),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
-- LeaseReturn removes an instance's rows; retention removes long-expired ones.
create index fleet_leases_instance on fleet_leases (tenant_id, environment_id, instance_id);
create index fleet_leases_expires on fleet_leases (expires_at);
