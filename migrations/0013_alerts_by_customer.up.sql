-- A customer's alerts, newest first (its page in the dashboard, ?customer= on the API),
-- without walking the environment's whole alert history.
create index alerts_customer_fired on alerts (environment_id, customer_id, fired_at desc, id);
