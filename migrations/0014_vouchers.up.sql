-- Customer vouchers (Limitr Cloud's prepaid allowance for soft-limit overage). A
-- customer has at most one voucher: setting one replaces the previous row, under a new
-- id, so SDKs never mix the debits of an old voucher into the new one's balance.
-- runes is null for a voucher that only expires. The row goes with its customer.
create table customer_vouchers (
    id              text primary key,
    tenant_id       uuid not null,
    environment_id  uuid not null,
    customer_id     text not null,
    customer_uid    uuid not null,
    runes           numeric check (runes >= 0),
    expires_at      timestamptz not null,
    set_at          timestamptz not null default now(),
    set_by          uuid,
    unique (tenant_id, environment_id, customer_id),
    foreign key (tenant_id, environment_id, customer_id) references customers (tenant_id, environment_id, id) on delete cascade
);

-- What SDK instances debited from vouchers, summed per customer incarnation and voucher
-- id. A usage batch's debits are added in the transaction that records the batch, so a
-- duplicate batch adds nothing. There is no reference to customer_vouchers: a debit of
-- a voucher since replaced or removed was still spent, and is kept (keyed by the uid,
-- so a voucher id named by another customer's SDK never reduces this one's balance).
create table voucher_debit_totals (
    tenant_id       uuid not null,
    environment_id  uuid not null,
    customer_id     text not null,
    customer_uid    uuid not null,
    voucher_id      text not null,
    runes           numeric not null default 0,
    updated_at      timestamptz not null default now(),
    primary key (customer_uid, voucher_id),
    foreign key (tenant_id, environment_id) references environments (tenant_id, id) on delete cascade
);

-- Debits naming no customer of the environment are kept for an operator like the
-- batch's other records.
alter table unattributed_usage drop constraint unattributed_usage_kind_check;
alter table unattributed_usage add constraint unattributed_usage_kind_check
    check (kind in ('delta', 'grant_draw', 'voucher_debit', 'event'));
