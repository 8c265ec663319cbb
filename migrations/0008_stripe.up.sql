-- Stripe, per environment: the connection (secrets sealed with LIMITR_SECRET_KEY, never
-- plaintext), what our objects are called there, the webhook events seen, and
-- reconciliation reports.
create table stripe_connections (
    tenant_id               uuid not null,
    environment_id          uuid not null,
    secret_key_sealed       text not null,
    webhook_secret_sealed   text not null,
    key_hint                text not null,
    livemode                boolean not null,
    created_at              timestamptz not null default now(),
    updated_at              timestamptz not null default now(),
    primary key (tenant_id, environment_id),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create unique index stripe_connections_env on stripe_connections (environment_id);

create table stripe_customers (
    customer_uid    uuid primary key,
    tenant_id       uuid not null,
    environment_id  uuid not null,
    stripe_id       text not null,
    synced_revision bigint not null,
    updated_at      timestamptz not null default now()
);

create table stripe_plans (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    plan            text not null,
    product_id      text not null,
    price_id        text,
    unit_amount     bigint,
    currency        text,
    updated_at      timestamptz not null default now(),
    primary key (tenant_id, environment_id, plan),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);

-- Each item of a pushed invoice, stored in the transaction that records the step.
create table stripe_invoice_items (
    invoice_id      uuid not null references invoices (id),
    line_index      int not null,
    stripe_item_id  text not null,
    primary key (invoice_id, line_index)
);

create table stripe_events (
    environment_id  uuid not null,
    event_id        text not null,
    type            text not null,
    invoice_id      uuid,
    received_at     timestamptz not null default now(),
    primary key (environment_id, event_id)
);
create index stripe_events_received on stripe_events (received_at);

create table stripe_reconciliations (
    id              bigserial primary key,
    tenant_id       uuid not null,
    environment_id  uuid not null,
    ran_at          timestamptz not null default now(),
    checked         int not null,
    drift           jsonb not null,
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create index stripe_reconciliations_env on stripe_reconciliations (tenant_id, environment_id, id desc);
