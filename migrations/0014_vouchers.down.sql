delete from unattributed_usage where kind = 'voucher_debit';
alter table unattributed_usage drop constraint unattributed_usage_kind_check;
alter table unattributed_usage add constraint unattributed_usage_kind_check
    check (kind in ('delta', 'grant_draw', 'event'));
drop table if exists voucher_debit_totals;
drop table if exists customer_vouchers;
