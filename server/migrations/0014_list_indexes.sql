-- Indexes for lists paged in SQL (issue 13): each list's default order, so a page is read
-- from the index instead of sorting every row.

-- /servers: newest first within a project (and across projects for admins).
CREATE INDEX instances_project_created ON instances (project_id, created_at, id);
CREATE INDEX instances_created ON instances (created_at, id);

-- Neutron lists: oldest first.
CREATE INDEX networks_created ON networks (created_at, id);
CREATE INDEX ports_created ON ports (created_at, id);
CREATE INDEX subnets_created ON subnets (created_at, id);
