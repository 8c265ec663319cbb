-- Alerts: where they go (channels, secrets sealed with LIMITR_SECRET_KEY, never
-- plaintext), when they fire (rules), what fired (alerts, one per rule and dedup key:
-- once per customer, threshold and period), and every delivery with its attempts.
-- Engine events forwarded by SDKs are kept, deduplicated per (instance, sequence).
create table alert_channels (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       uuid not null,
    environment_id  uuid not null,
    name            text not null,
    kind            text not null check (kind in ('slack', 'email', 'webhook')),
    -- What may be shown: channel, recipients, SMTP host, webhook URL, hints.
    config          jsonb not null default '{}',
    -- The secrets (Slack token or webhook URL, SMTP password, webhook signing secrets)
    -- as one sealed JSON object.
    secrets_sealed  text not null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create unique index alert_channels_name on alert_channels (environment_id, name);

create table alert_rules (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       uuid not null,
    environment_id  uuid not null,
    name            text not null,
    kind            text not null,
    params          jsonb not null default '{}',
    filters         jsonb not null default '{}',
    condition       text not null default '',
    channels        uuid[] not null default '{}',
    enabled         boolean not null default true,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create unique index alert_rules_name on alert_rules (environment_id, name);

create table alerts (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       uuid not null,
    environment_id  uuid not null,
    rule_id         uuid references alert_rules (id) on delete set null,
    rule_name       text not null,
    kind            text not null,
    -- One alert per rule and key (customer, subject, threshold, period): the unique
    -- index, not a check in code, is what makes an alert fire once.
    dedup_key       text not null,
    customer_uid    uuid,
    customer_id     text not null default '',
    entitlement     text not null default '',
    threshold       text not null default '',
    period_start    timestamptz,
    title           text not null,
    summary         text not null,
    data            jsonb not null default '{}',
    -- A lower threshold crossed in the same step as a higher one is recorded (so it
    -- never fires later in the period) but not delivered.
    superseded      boolean not null default false,
    fired_at        timestamptz not null default now(),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create unique index alerts_once on alerts (rule_id, dedup_key);
create index alerts_env_fired on alerts (environment_id, fired_at desc, id);

create table alert_deliveries (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       uuid not null,
    environment_id  uuid not null,
    alert_id        uuid not null references alerts (id) on delete cascade,
    channel_id      uuid references alert_channels (id) on delete set null,
    channel_name    text not null,
    channel_kind    text not null,
    -- pending: not tried yet or waiting for a retry; sending: an attempt is under way
    -- (found so after a crash, its outcome is in doubt); delivered; dead: gave up.
    status          text not null check (status in ('pending', 'sending', 'delivered', 'dead')),
    attempts        integer not null default 0,
    -- A resend starts a new retry window and a new message id (the delivery id with
    -- -r<n>), so receivers that deduplicate do not drop it.
    resends         integer not null default 0,
    window_start    timestamptz not null default now(),
    last_error      text not null default '',
    next_attempt_at timestamptz,
    delivered_at    timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create unique index alert_deliveries_once on alert_deliveries (alert_id, channel_id);
create index alert_deliveries_env on alert_deliveries (environment_id, created_at desc, id);

create table alert_attempts (
    id              bigserial primary key,
    delivery_id     uuid not null references alert_deliveries (id) on delete cascade,
    attempt         integer not null,
    started_at      timestamptz not null default now(),
    finished_at     timestamptz,
    -- delivered, retry, failed (permanent), dead, in_doubt (found unfinished after a
    -- crash), confirmed (an in-doubt attempt the destination confirms it received)
    outcome         text not null default '',
    status_code     integer not null default 0,
    error           text not null default ''
);
create index alert_attempts_delivery on alert_attempts (delivery_id, attempt);

create table sdk_event_batches (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    instance_id     text not null,
    sequence        bigint not null,
    events          integer not null,
    received_at     timestamptz not null default now(),
    primary key (environment_id, instance_id, sequence),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create index sdk_event_batches_received on sdk_event_batches (received_at);

create table sdk_events (
    id              bigserial primary key,
    tenant_id       uuid not null,
    environment_id  uuid not null,
    instance_id     text not null,
    sequence        bigint not null,
    customer_uid    uuid,
    customer_id     text not null,
    type            text not null,
    notification    text not null default '',
    source          text not null default '',
    entitlement     text not null default '',
    plan            text not null default '',
    cap_id          text not null default '',
    at              timestamptz not null,
    count           bigint not null,
    payload         jsonb not null default '{}',
    received_at     timestamptz not null default now(),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create index sdk_events_env on sdk_events (environment_id, id desc);
create index sdk_events_received on sdk_events (received_at);
