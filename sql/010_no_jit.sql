-- No JIT compilation inside lb_submit and lb_apply (issue 11). Both run with enable_nestloop off (sql/008), and
-- the planner keeps a nested loop where it is the only plan (the primary-key probes) by adding a "disable cost"
-- of 10^10 to it: every statement with such a probe is estimated at more than 10^10, far above jit_above_cost
-- (100,000 by default), so a PostgreSQL built with LLVM and jit = on (PostgreSQL's default since 12: Debian's,
-- Ubuntu's and the PGDG packages, the official Docker image) compiled each statement on every call: ~200 ms of
-- JIT per statement, ~800 ms per batch of 48 instead of ~3 ms (docs/performance.md). The embedded PostgreSQL
-- is built without LLVM, which is why the bench never showed it. The estimate is an artefact of the setting,
-- not of the work: the statements are small (at most a few thousand rows), so JIT would never pay off here.
ALTER FUNCTION lb_submit(uuid[], text[], text[], bigint[], text[], interval, jsonb[]) SET jit = off;
ALTER FUNCTION lb_apply(text[], text[], bigint[], smallint[], text[], text[], bigint[]) SET jit = off;
