-- The dashboard's people: users, their role in each tenant, sessions, invites and login
-- throttling. Secrets (session and invite tokens) are stored only as SHA-256 hashes;
-- passwords only as argon2id PHC strings.

create table users (
    id              uuid primary key,
    email           text not null check (email <> '' and email = lower(email)),
    name            text not null default '',
    password_hash   text not null,
    created_at      timestamptz not null default now()
);
-- Emails are compared case-insensitively: they are stored lower-cased (checked above)
-- and unique as such.
create unique index users_email on users (email);

create table memberships (
    tenant_id       uuid not null references tenants (id) on delete cascade,
    user_id         uuid not null references users (id) on delete cascade,
    role            text not null check (role in ('owner', 'admin', 'editor', 'billing', 'viewer')),
    created_at      timestamptz not null default now(),
    primary key (tenant_id, user_id)
);
create index memberships_user on memberships (user_id);

create table user_sessions (
    id              uuid primary key,
    token_hash      bytea not null unique,
    user_id         uuid not null references users (id) on delete cascade,
    tenant_id       uuid not null references tenants (id) on delete cascade,
    -- The environment the dashboard shows; null: the tenant's first.
    environment     text,
    csrf_token      text not null,
    created_at      timestamptz not null,
    last_seen_at    timestamptz not null,
    expires_at      timestamptz not null,
    revoked_at      timestamptz,
    client_ip       text not null default '',
    user_agent      text not null default ''
);
create index user_sessions_user on user_sessions (user_id);

create table user_invites (
    id              uuid primary key,
    tenant_id       uuid not null references tenants (id) on delete cascade,
    email           text not null check (email = lower(email)),
    role            text not null check (role in ('owner', 'admin', 'editor', 'billing', 'viewer')),
    token_hash      bytea not null unique,
    invited_by      uuid references users (id) on delete set null,
    created_at      timestamptz not null,
    expires_at      timestamptz not null,
    accepted_at     timestamptz,
    accepted_by     uuid references users (id) on delete set null,
    revoked_at      timestamptz
);
create index user_invites_tenant on user_invites (tenant_id, created_at desc);

-- Failed logins, by subject ("email:…" or "ip:…"), counted over a sliding window. Kept
-- in Postgres so throttling holds when Redis is down and across API replicas.
create table login_failures (
    id              bigserial primary key,
    subject         text not null,
    at              timestamptz not null
);
create index login_failures_subject on login_failures (subject, at);

-- Changes made from the dashboard name the user who made them.
alter table audit_log add column actor_user_id uuid;
