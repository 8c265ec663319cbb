alter table audit_log drop column if exists actor_user_id;
drop table if exists login_failures;
drop table if exists user_invites;
drop table if exists user_sessions;
drop table if exists memberships;
drop table if exists users;
