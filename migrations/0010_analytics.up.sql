-- Analytics: margins and usage over time, booked by the worker from committed meters.
--
-- Every figure is booked as a change: when a meter period's committed usage (or the
-- policy version or overrides that price it) changes, what billing's rating says it is
-- worth now minus what was booked for it before is added at the time of the change. So
-- what is booked for a meter period always sums to what its invoice bills, and the
-- rollups below are sums of changes that can be added over any window.

-- What has been booked for each meter period, per billing period for a level (a meter
-- that never resets, billed again every period).
create table analytics_meters (
    customer_uid    uuid not null,
    entitlement     text not null,
    period_start    timestamptz not null,
    bill_start      timestamptz not null,
    tenant_id       uuid not null,
    environment_id  uuid not null,
    bill_end        timestamptz not null,
    level           boolean not null default false,
    units           numeric not null default 0,
    grant_covered   numeric not null default 0,
    calls           bigint not null default 0,
    gross           numeric not null default 0,
    net             numeric not null default 0,
    cost            numeric not null default 0,
    version         int not null default 0,
    primary key (customer_uid, entitlement, period_start, bill_start)
);
-- Re-rating after a publish or an override visits meter periods whose invoice is ahead.
create index analytics_meters_open on analytics_meters (environment_id, bill_end);

-- Plan fees booked for each customer's billing period; topup invoices booked once.
create table analytics_fees (
    customer_uid    uuid not null,
    bill_start      timestamptz not null,
    environment_id  uuid not null,
    bill_end        timestamptz not null,
    amount          numeric not null,
    primary key (customer_uid, bill_start)
);
create table analytics_topups (
    invoice_id      uuid primary key,
    environment_id  uuid not null
);

-- Per customer × entitlement × policy version, by hour and by day (UTC). Revenue as
-- invoiced is usage_revenue − grant_revenue + fee_revenue + topup_revenue. Fees are
-- booked under the plan's subscription entitlement, topups under ''.
create table analytics_hourly (
    environment_id  uuid not null,
    bucket          timestamptz not null,
    customer_uid    uuid not null,
    entitlement     text not null,
    version         int not null,
    tenant_id       uuid not null,
    customer_id     text not null,
    plan            text not null,
    customer_type   text not null,
    units           numeric not null default 0,
    calls           bigint not null default 0,
    cost            numeric not null default 0,
    usage_revenue   numeric not null default 0,
    grant_revenue   numeric not null default 0,
    fee_revenue     numeric not null default 0,
    topup_revenue   numeric not null default 0,
    primary key (environment_id, bucket, customer_uid, entitlement, version)
);
create index analytics_hourly_customer on analytics_hourly (environment_id, customer_id, bucket);
create table analytics_daily (like analytics_hourly including defaults);
alter table analytics_daily add primary key (environment_id, bucket, customer_uid, entitlement, version);
create index analytics_daily_customer on analytics_daily (environment_id, customer_id, bucket);

-- The same summed over customers, per plan × customer type × entitlement: what
-- grouping by plan, customer type or entitlement reads, whatever the number of
-- customers.
create table analytics_group_hourly (
    environment_id  uuid not null,
    bucket          timestamptz not null,
    plan            text not null,
    customer_type   text not null,
    entitlement     text not null,
    units           numeric not null default 0,
    calls           bigint not null default 0,
    cost            numeric not null default 0,
    usage_revenue   numeric not null default 0,
    grant_revenue   numeric not null default 0,
    fee_revenue     numeric not null default 0,
    topup_revenue   numeric not null default 0,
    primary key (environment_id, bucket, plan, customer_type, entitlement)
);
create table analytics_group_daily (like analytics_group_hourly including defaults);
alter table analytics_group_daily add primary key (environment_id, bucket, plan, customer_type, entitlement);

-- Per customer, running totals through the end of each UTC day (through now for
-- today), one row per customer and day from its first booking on: the total of any
-- window is the difference of two rows, so sorting 100k customers by margin reads
-- 200k rows, not 100k × days.
create table analytics_customer_days (
    environment_id  uuid not null,
    day             date not null,
    customer_uid    uuid not null,
    customer_id     text not null,
    plan            text not null,
    customer_type   text not null,
    calls           bigint not null default 0,
    cost            numeric not null default 0,
    usage_revenue   numeric not null default 0,
    grant_revenue   numeric not null default 0,
    fee_revenue     numeric not null default 0,
    topup_revenue   numeric not null default 0,
    -- Revenue as invoiced and cost as floats, kept with the exact figures: what
    -- ranking customers reads, from the covering index alone. Figures shown are the
    -- exact columns.
    rank_revenue    float8 not null default 0,
    rank_cost       float8 not null default 0,
    primary key (environment_id, day, customer_uid)
);
create index analytics_customer_days_customer on analytics_customer_days (environment_id, customer_uid, day);
create index analytics_customer_days_rank on analytics_customer_days (environment_id, day, customer_uid)
    include (calls, rank_revenue, rank_cost);

-- The last day each environment's running totals were carried forward to.
create table analytics_carried (
    environment_id  uuid primary key,
    through_day     date not null
);
