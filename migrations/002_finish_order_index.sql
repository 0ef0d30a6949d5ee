-- 002_finish_order_index: completing a job numbers it with MAX(finish_order) + 1 of its
-- request; without an index that is a scan of every job of the request, which made a fan-out
-- of N jobs cost O(N^2). With it, the MAX is one index lookup.
CREATE INDEX jobs_finish_order ON jobs (request_id, finish_order);
