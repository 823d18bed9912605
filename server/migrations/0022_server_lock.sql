-- Server lock (issue 17): who holds an instance's lock (Nova's `locked_by`: 'owner' when the
-- instance's own project locked it, 'admin' otherwise; NULL when unlocked) and why (the
-- `locked_reason` of microversion 2.73; NULL when none was given). `locked` itself (0/1) is
-- from 0004. Tags stay the JSON list of 0001's `tags` column.
ALTER TABLE instances ADD COLUMN locked_by TEXT;
ALTER TABLE instances ADD COLUMN locked_reason TEXT;
