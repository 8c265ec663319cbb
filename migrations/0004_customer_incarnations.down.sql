drop index if exists audit_log_at;
drop index if exists usage_batches_received;
drop index if exists change_feed_created;
drop table if exists change_feed_horizon;
drop table if exists unattributed_usage;
drop table if exists deleted_customers;
alter table usage_events drop column if exists customer_uid;
-- Incarnations of one id merge back into one row per key: nothing is lost.
alter table grant_draw_totals drop constraint grant_draw_totals_pkey;
create temporary table merged_draws on commit drop as
    select tenant_id, environment_id, customer_id, grant_id, period_start, sum(units) as units, max(updated_at) as updated_at
    from grant_draw_totals group by 1, 2, 3, 4, 5;
delete from grant_draw_totals;
insert into grant_draw_totals (tenant_id, environment_id, customer_id, grant_id, period_start, units, updated_at, customer_uid)
    select *, gen_random_uuid() from merged_draws;
alter table grant_draw_totals add primary key (tenant_id, environment_id, customer_id, grant_id, period_start);
alter table grant_draw_totals drop column customer_uid;
drop index if exists meter_aggregates_customer;
alter table meter_aggregates drop constraint meter_aggregates_pkey;
create temporary table merged_meters on commit drop as
    select tenant_id, environment_id, customer_id, entitlement, period_start, max(credit) as credit, sum(units) as units,
        sum(overhead) as overhead, sum(price) as price, sum(calls) as calls, max(updated_at) as updated_at
    from meter_aggregates group by 1, 2, 3, 4, 5;
delete from meter_aggregates;
insert into meter_aggregates (tenant_id, environment_id, customer_id, entitlement, period_start, credit, units, overhead, price, calls, updated_at, customer_uid)
    select *, gen_random_uuid() from merged_meters;
alter table meter_aggregates add primary key (tenant_id, environment_id, customer_id, entitlement, period_start);
alter table meter_aggregates drop column customer_uid;
drop index if exists usage_deltas_meter_pending;
create index usage_deltas_meter_pending on usage_deltas (tenant_id, environment_id, customer_id, entitlement, period_start)
    where aggregated_at is null;
alter table usage_deltas drop column customer_uid;
alter table customers drop constraint customers_uid_key;
alter table customers drop column uid;
