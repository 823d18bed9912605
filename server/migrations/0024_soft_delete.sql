-- Soft delete (issue 17): when a server was soft-deleted (Nova's `deleted_at` of a
-- SOFT_DELETED instance, which `_reclaim_queued_deletes` compares with
-- `reclaim_instance_interval`); NULL when it is not soft-deleted.
ALTER TABLE instances ADD COLUMN soft_deleted_at TEXT;
