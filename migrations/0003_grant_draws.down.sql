drop table if exists grant_draw_totals;
