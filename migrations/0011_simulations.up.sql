-- What-if replays (POST /v1/environments/{env}/simulations): the candidate policy (a
-- saved version, or a document that is not one), the window, and, once the River job
-- on the "simulations" queue has run, the report or the error. Kept until the
-- environment is deleted.
create table simulations (
    id                uuid primary key default gen_random_uuid(),
    -- seq orders an environment's simulations for cursor pagination (newest first).
    seq               bigint generated always as identity unique,
    tenant_id         uuid not null,
    environment_id    uuid not null,
    status            text not null default 'queued' check (status in ('queued', 'running', 'succeeded', 'failed')),
    baseline_version  int,
    candidate_version int,
    candidate_format  text,
    candidate_source  text,
    window_from       timestamptz not null,
    window_to         timestamptz not null,
    current_version   int,
    error             text,
    result            jsonb,
    created_by        uuid,
    created_at        timestamptz not null default now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    check ((candidate_version is null) <> (candidate_source is null)),
    check (window_from < window_to),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
create index simulations_by_environment on simulations (tenant_id, environment_id, seq desc);
