drop table stripe_reconciliations;
drop table stripe_events;
drop table stripe_invoice_items;
drop table stripe_plans;
drop table stripe_customers;
drop table stripe_connections;
