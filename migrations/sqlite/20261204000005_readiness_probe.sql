-- One row that the readiness check rewrites: on SQLite, ready means a write commits (a full
-- disk or a read-only file fail every operation, reads included, since reads are audited).
CREATE TABLE readiness_probe (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
);
