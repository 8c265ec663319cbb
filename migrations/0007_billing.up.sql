-- Billing: settings per environment, invoices rated on the server from committed usage,
-- credit notes, gapless invoice numbers, test clocks, and the plan history proration
-- needs.

-- Billing changes are on the change feed too (SDK streams skip kinds they do not know).
alter table change_feed drop constraint change_feed_kind_check;
alter table change_feed add constraint change_feed_kind_check
    check (kind in ('policy', 'customer', 'invoice', 'test_clock', 'billing_settings'));

-- A live environment bills real money: test clocks are refused there.
alter table environments add column live boolean not null default false;
update environments set live = true where name = 'production';

create table billing_settings (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    currency        text not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
    rune_rate       numeric not null default 1 check (rune_rate > 0),
    grace_seconds   bigint not null default 3600 check (grace_seconds >= 0),
    days_until_due  int not null default 30 check (days_until_due between 0 and 365),
    invoice_prefix  text not null default 'INV',
    seller          jsonb not null default '{}',
    updated_at      timestamptz not null default now(),
    revision        bigint not null default 1,
    primary key (tenant_id, environment_id),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);

-- Test clocks: customers attached to one live on its frozen time.
create table test_clocks (
    id              uuid primary key,
    tenant_id       uuid not null,
    environment_id  uuid not null,
    name            text not null default '',
    frozen_time     timestamptz not null,
    status          text not null default 'ready' check (status in ('ready', 'advancing')),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create index test_clocks_env on test_clocks (tenant_id, environment_id, created_at);

alter table customers add column test_clock_id uuid references test_clocks (id);
create index customers_test_clock on customers (test_clock_id) where test_clock_id is not null;

-- The explicit plan a customer was on from each instant: plan fees and mid-period
-- proration read it. Existing customers start with their current plan at creation.
create table customer_plan_history (
    customer_uid    uuid not null,
    effective_at    timestamptz not null,
    plan            text not null,
    primary key (customer_uid, effective_at)
);
insert into customer_plan_history (customer_uid, effective_at, plan)
    select uid, created_at, plan from customers;

-- The history is kept by the database, so no code path can change a plan without it.
-- A customer on a test clock changes plans at the clock's time, and starts at it.
create function record_customer_plan() returns trigger language plpgsql as $$
declare
    at timestamptz;
begin
    select frozen_time into at from test_clocks where id = new.test_clock_id;
    if at is null then
        at := case when tg_op = 'INSERT' then new.created_at else now() end;
    end if;
    insert into customer_plan_history (customer_uid, effective_at, plan) values (new.uid, at, new.plan)
        on conflict (customer_uid, effective_at) do update set plan = excluded.plan;
    return null;
end $$;
create trigger customers_plan_insert after insert on customers
    for each row execute function record_customer_plan();
create trigger customers_plan_update after update of plan on customers
    for each row when (old.plan is distinct from new.plan) execute function record_customer_plan();

-- Gapless invoice numbers per environment: the counter row is locked and bumped in the
-- transaction that finalizes, so a rolled-back finalization leaves no hole.
create table invoice_counters (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    last_number     bigint not null default 0,
    primary key (tenant_id, environment_id),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);

create table invoices (
    id                  uuid primary key,
    tenant_id           uuid not null,
    environment_id      uuid not null,
    customer_uid        uuid not null,
    customer_id         text not null,
    kind                text not null check (kind in ('period', 'topup')),
    topup_id            uuid unique,
    period_start        timestamptz not null,
    period_end          timestamptz not null,
    status              text not null check (status in ('draft', 'finalized', 'paid', 'void', 'uncollectible')),
    sequence            bigint,
    number              text,
    currency            text not null,
    lines               jsonb not null default '[]',
    -- The meter periods the lines bill (recorded in billed_meter_periods at finalization).
    bills               jsonb not null default '[]',
    subtotal            numeric not null default 0,
    total               numeric not null default 0,
    credited            numeric not null default 0,
    amount_due          numeric not null default 0,
    buyer               jsonb not null default '{}',
    seller              jsonb not null default '{}',
    -- When the draft may be finalized (period end + grace, on the customer's clock).
    finalize_after      timestamptz not null,
    due_at              timestamptz,
    finalized_at        timestamptz,
    paid_at             timestamptz,
    voided_at           timestamptz,
    uncollectible_at    timestamptz,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    revision            bigint not null default 1,
    stripe_invoice_id   text,
    stripe_status       text not null default '' check (stripe_status in ('', 'pending', 'synced', 'failed')),
    stripe_error        text not null default '',
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade,
    check ((status = 'draft') = (sequence is null)),
    check (kind = 'period' or topup_id is not null),
    unique (tenant_id, environment_id, sequence)
);
-- Exactly one invoice per customer and billing period, whatever runs concurrently.
create unique index invoices_one_per_period on invoices (customer_uid, period_start) where kind = 'period';
create index invoices_env on invoices (tenant_id, environment_id, id);
create index invoices_customer on invoices (tenant_id, environment_id, customer_id, period_start desc);
create index invoices_drafts on invoices (finalize_after) where status = 'draft';

-- What finalized invoices billed per meter period, net of grants (amount in the
-- invoice currency): late usage for a billed meter period is the difference, billed
-- as an adjustment on the next invoice.
create table billed_meter_periods (
    customer_uid    uuid not null,
    entitlement     text not null,
    period_start    timestamptz not null,
    units           numeric not null,
    grant_covered   numeric not null,
    amount          numeric not null,
    policy_version  int not null,
    invoice_id      uuid not null references invoices (id),
    updated_at      timestamptz not null default now(),
    primary key (customer_uid, entitlement, period_start)
);

create table credit_notes (
    id              uuid primary key,
    tenant_id       uuid not null,
    environment_id  uuid not null,
    invoice_id      uuid not null references invoices (id),
    reason          text not null,
    lines           jsonb not null,
    total           numeric not null check (total > 0),
    created_at      timestamptz not null default now(),
    created_by      uuid,
    stripe_credit_note_id text,
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create index credit_notes_invoice on credit_notes (invoice_id, created_at);
