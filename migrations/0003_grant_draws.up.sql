-- What SDK instances drew from customers' grants, summed per grant and grant period.
-- A usage batch's draws are added in the transaction that records the batch, so a
-- duplicate batch adds nothing. Hydration subtracts these from the grants' values.
create table grant_draw_totals (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    customer_id     text not null,
    grant_id        text not null,
    period_start    timestamptz not null,
    units           numeric not null default 0,
    updated_at      timestamptz not null default now(),
    primary key (tenant_id, environment_id, customer_id, grant_id, period_start),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);
