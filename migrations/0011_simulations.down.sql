drop table if exists simulations;
