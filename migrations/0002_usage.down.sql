drop table if exists usage_events;
drop table if exists meter_aggregates;
drop table if exists usage_deltas;
drop table if exists usage_batches;
