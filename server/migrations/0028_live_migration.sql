-- Live migration (os-migrateLive): what an admin asked of a running live migration, read by
-- the source agent with each progress report (`POST /agent/v1/migrations/{uuid}/progress`).
-- `live_abort`: DELETE /servers/{id}/migrations/{id} (the source cancels, the guest stays);
-- `live_force_complete`: the force_complete action (the source pauses the guest to converge).
ALTER TABLE migrations ADD COLUMN live_abort BIGINT NOT NULL DEFAULT 0;
ALTER TABLE migrations ADD COLUMN live_force_complete BIGINT NOT NULL DEFAULT 0;
