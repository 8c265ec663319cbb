drop table if exists fleet_leases;
