-- Customer spend caps held by the control plane: every SDK instance enforces them, in
-- fleet mode Exact against the fleet's total with leases of a cap's allowance. A cap is
-- named by its id on its customer; cap_key is minted by the server when the cap is
-- created and again when it is reset, and consumption and leases are counted per key:
-- a reset starts from zero without touching what the old key consumed. Replacing a
-- cap's configuration keeps its key. config holds the engine's flags and lists
-- (ignore_grants, overage_only, observe_only, overhead_cost, follow_decrements,
-- hard_trailing, shared, shared_with, scope, resets, reset_inc, reset_sch). The row
-- goes with its customer.
create table customer_caps (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    customer_id     text not null,
    customer_uid    uuid not null,
    cap_id          text not null,
    cap_key         text not null unique,
    credit          text not null,
    value           numeric not null check (value >= 0),
    config          jsonb not null default '{}',
    expires_at      timestamptz,
    created_at      timestamptz not null default now(),
    reset_at        timestamptz not null default now(),
    set_by          uuid,
    unique (tenant_id, environment_id, customer_id, cap_id),
    foreign key (tenant_id, environment_id, customer_id) references customers (tenant_id, environment_id, id) on delete cascade
);

-- What SDK instances consumed of caps, summed per customer incarnation, cap key and cap
-- period. A usage batch's cap uses are added in the transaction that records the batch,
-- so a duplicate batch adds nothing. There is no reference to customer_caps: use of a
-- cap since reset or removed was still consumed, and is kept (keyed by the uid, so a
-- key named by another customer's SDK never counts against this one's cap).
create table cap_usage_totals (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    customer_id     text not null,
    customer_uid    uuid not null,
    cap_key         text not null,
    period_start    timestamptz not null,
    units           numeric not null default 0,
    updated_at      timestamptz not null default now(),
    primary key (customer_uid, cap_key, period_start),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);

-- Leases of a cap's allowance share fleet_leases with the meters': a cap's row has
-- entitlement '' and cap_key set; a meter's keeps cap_key ''.
alter table fleet_leases add column cap_key text not null default '';
alter table fleet_leases drop constraint fleet_leases_pkey;
alter table fleet_leases add primary key (tenant_id, environment_id, customer_id, entitlement, cap_key, period_start, instance_id);

-- Cap uses naming no customer of the environment are kept for an operator like the
-- batch's other records.
alter table unattributed_usage drop constraint unattributed_usage_kind_check;
alter table unattributed_usage add constraint unattributed_usage_kind_check
    check (kind in ('delta', 'grant_draw', 'voucher_debit', 'cap_use', 'event'));
