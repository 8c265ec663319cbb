drop index if exists alerts_customer_fired;
