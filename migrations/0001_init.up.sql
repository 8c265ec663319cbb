-- Tenancy: a tenant (a company) has environments, each with its own active policy and
-- customers. Every tenant-owned row carries tenant_id and every query filters by it.
create table tenants (
    id          uuid primary key,
    slug        text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text not null,
    created_at  timestamptz not null default now()
);

create table environments (
    id          uuid primary key,
    tenant_id   uuid not null references tenants (id) on delete cascade,
    name        text not null check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    created_at  timestamptz not null default now(),
    unique (tenant_id, name),
    unique (tenant_id, id)
);

-- API keys are shown once and stored as a SHA-256 hash; the prefix finds the row.
create table api_keys (
    id              uuid primary key,
    tenant_id       uuid not null references tenants (id) on delete cascade,
    environment_id  uuid,
    kind            text not null check (kind in ('admin', 'sdk')),
    name            text not null default '',
    prefix          text not null unique,
    secret_hash     bytea not null,
    created_at      timestamptz not null default now(),
    created_by      uuid,
    revoked_at      timestamptz,
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade,
    check ((kind = 'sdk') = (environment_id is not null))
);
create index api_keys_tenant on api_keys (tenant_id, created_at);

-- Policy versions are immutable; publishing points an environment at one.
create table policy_versions (
    id          uuid primary key,
    tenant_id   uuid not null references tenants (id) on delete cascade,
    number      int not null,
    hash        text not null,
    format      text not null check (format in ('json', 'yaml', 'toml')),
    source      bytea not null,
    canonical   jsonb not null,
    created_at  timestamptz not null default now(),
    created_by  uuid,
    unique (tenant_id, number),
    unique (tenant_id, id)
);

create table policy_publications (
    id              bigserial primary key,
    tenant_id       uuid not null references tenants (id) on delete cascade,
    environment_id  uuid not null,
    version_id      uuid not null,
    action          text not null check (action in ('publish', 'rollback')),
    published_at    timestamptz not null default now(),
    published_by    uuid,
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade,
    foreign key (tenant_id, version_id) references policy_versions (tenant_id, id)
);
create index policy_publications_env on policy_publications (tenant_id, environment_id, id desc);

create table environment_policies (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    version_id      uuid not null,
    updated_at      timestamptz not null default now(),
    primary key (tenant_id, environment_id),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade,
    foreign key (tenant_id, version_id) references policy_versions (tenant_id, id)
);

-- Customers as the control plane knows them; SDKs hydrate from these rows.
create table customers (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    id              text not null check (length(id) between 1 and 256),
    plan            text not null default '',
    type            text not null default 'user',
    label           text not null default 'User',
    refs            text[] not null default '{}',
    alt_ids         text[] not null default '{}',
    metadata        jsonb not null default '{}',
    timezone        text not null default '',
    billing_anchor  timestamptz not null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    revision        bigint not null default 1,
    primary key (tenant_id, environment_id, id),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);

create table customer_alt_ids (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    alt_id          text not null,
    customer_id     text not null,
    primary key (tenant_id, environment_id, alt_id),
    foreign key (tenant_id, environment_id, customer_id) references customers (tenant_id, environment_id, id) on delete cascade
);

create table customer_overrides (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    customer_id     text not null,
    entitlement     text not null,
    spec            jsonb not null,
    expires_at      timestamptz,
    created_at      timestamptz not null default now(),
    created_by      uuid,
    primary key (tenant_id, environment_id, customer_id, entitlement),
    foreign key (tenant_id, environment_id, customer_id) references customers (tenant_id, environment_id, id) on delete cascade
);

-- Topups applied through the API: the grant the SDK hydrates, with what it cost.
create table customer_topups (
    id              uuid primary key,
    tenant_id       uuid not null,
    environment_id  uuid not null,
    customer_id     text not null,
    topup           text not null,
    grant_id        text not null,
    credit          text not null,
    value           numeric not null,
    price           numeric,
    currency        text not null default 'usd',
    applied_at      timestamptz not null default now(),
    applied_by      uuid,
    foreign key (tenant_id, environment_id, customer_id) references customers (tenant_id, environment_id, id) on delete cascade
);
create index customer_topups_customer on customer_topups (tenant_id, environment_id, customer_id, applied_at);

-- Every mutating call: who, what, when, before and after.
create table audit_log (
    id              bigserial primary key,
    tenant_id       uuid not null references tenants (id) on delete cascade,
    environment_id  uuid,
    actor_key_id    uuid,
    action          text not null,
    resource        text not null,
    resource_id     text not null,
    before          jsonb,
    after           jsonb,
    request_id      text not null default '',
    at              timestamptz not null default now()
);
create index audit_log_tenant on audit_log (tenant_id, id desc);

-- Changes SDKs must hear about (policy published, customer changed), in commit order.
create table change_feed (
    id              bigserial primary key,
    tenant_id       uuid not null references tenants (id) on delete cascade,
    environment_id  uuid not null,
    kind            text not null check (kind in ('policy', 'customer')),
    subject         text not null,
    payload         jsonb not null default '{}',
    created_at      timestamptz not null default now()
);
create index change_feed_env on change_feed (tenant_id, environment_id, id);

create table idempotency_keys (
    tenant_id     text not null,
    principal     text not null,
    key           text not null,
    method        text not null,
    path          text not null,
    request_hash  bytea not null,
    status        int,
    headers       jsonb,
    body          bytea,
    created_at    timestamptz not null default now(),
    completed_at  timestamptz,
    primary key (tenant_id, principal, key)
);
create index idempotency_keys_created on idempotency_keys (created_at);
