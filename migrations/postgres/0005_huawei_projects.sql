-- Huawei resources belong to the project whose path created them (issue 14): a token bound to project A
-- must not see, change or delete project B's. '' marks rows made before this migration: every project
-- still sees them, and the next write by a project takes them over.
ALTER TABLE huawei_record_callbacks ADD COLUMN project_id TEXT NOT NULL DEFAULT '';
ALTER TABLE huawei_publish_notify ADD COLUMN project_id TEXT NOT NULL DEFAULT '';
