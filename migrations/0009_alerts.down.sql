drop table if exists sdk_events;
drop table if exists sdk_event_batches;
drop table if exists alert_attempts;
drop table if exists alert_deliveries;
drop table if exists alerts;
drop table if exists alert_rules;
drop table if exists alert_channels;
