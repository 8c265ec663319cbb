alter table meter_aggregates drop column grant_covered;
alter table usage_deltas drop column grant_covered;
