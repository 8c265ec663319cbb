delete from unattributed_usage where kind = 'cap_use';
alter table unattributed_usage drop constraint unattributed_usage_kind_check;
alter table unattributed_usage add constraint unattributed_usage_kind_check
    check (kind in ('delta', 'grant_draw', 'voucher_debit', 'event'));
delete from fleet_leases where cap_key <> '';
alter table fleet_leases drop constraint fleet_leases_pkey;
alter table fleet_leases add primary key (tenant_id, environment_id, customer_id, entitlement, period_start, instance_id);
alter table fleet_leases drop column cap_key;
drop table if exists cap_usage_totals;
drop table if exists customer_caps;
