-- The workspace's tables, version 1. Documented in docs/workspace.md; the
-- names of tables and columns that people query never change silently.
-- Times are text, UTC, RFC 3339 with milliseconds ('2026-12-06T06:00:00.000Z'):
-- they sort and compare as text in both SQLite and PostgreSQL.

CREATE TABLE devices (
    client_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    agent_version TEXT,
    host_name TEXT,
    os TEXT,
    system_information TEXT,
    system_information_time TEXT,
    messages BIGINT NOT NULL DEFAULT 0,
    events BIGINT NOT NULL DEFAULT 0,
    heartbeat_seconds BIGINT,
    last_address TEXT
);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    agent_version TEXT,
    topic TEXT NOT NULL,
    time TEXT NOT NULL,
    size BIGINT NOT NULL,
    compressed BOOLEAN NOT NULL,
    events BIGINT NOT NULL
);
CREATE INDEX messages_time ON messages (time);

CREATE TABLE events (
    event_id TEXT NOT NULL,
    item BIGINT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    category TEXT NOT NULL,
    time TEXT NOT NULL,
    hit_count BIGINT NOT NULL,
    process_id BIGINT,
    parent_process_id BIGINT,
    executable TEXT,
    command_line TEXT,
    user_id TEXT,
    user_name TEXT,
    remote_address TEXT,
    remote_port TEXT,
    local_address TEXT,
    local_port TEXT,
    direction TEXT,
    protocol TEXT,
    operation TEXT,
    path TEXT,
    result TEXT,
    payload TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (event_id, item)
);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_device_time ON events (device, time);
CREATE INDEX events_kind_time ON events (kind, time);

CREATE TABLE alerts (
    event_id TEXT NOT NULL,
    item BIGINT NOT NULL,
    device TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    severity_level BIGINT NOT NULL,
    title TEXT NOT NULL,
    time TEXT NOT NULL,
    hit_count BIGINT NOT NULL,
    source TEXT,
    description TEXT,
    tags TEXT,
    process_id BIGINT,
    executable TEXT,
    command_line TEXT,
    user_name TEXT,
    remote_address TEXT,
    trigger_kind TEXT,
    payload TEXT NOT NULL,
    PRIMARY KEY (event_id, item)
);
CREATE INDEX alerts_time ON alerts (time);
CREATE INDEX alerts_device_time ON alerts (device, time);
CREATE INDEX alerts_rule_time ON alerts (rule, time);

CREATE TABLE recommendations (
    device TEXT NOT NULL,
    check_id TEXT NOT NULL,
    result TEXT NOT NULL,
    severity TEXT NOT NULL,
    title TEXT,
    description TEXT NOT NULL,
    error TEXT NOT NULL,
    policy TEXT,
    time TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (device, check_id)
);

CREATE TABLE recommendation_history (
    event_id TEXT NOT NULL,
    item BIGINT NOT NULL,
    device TEXT NOT NULL,
    check_id TEXT NOT NULL,
    result TEXT NOT NULL,
    time TEXT NOT NULL,
    PRIMARY KEY (event_id, item)
);
CREATE INDEX recommendation_history_device ON recommendation_history (device, check_id, time);
CREATE INDEX recommendation_history_time ON recommendation_history (time);

CREATE TABLE snapshots (
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    time TEXT NOT NULL,
    items BIGINT NOT NULL,
    payload TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (device, kind)
);

CREATE TABLE rejected (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    size BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX rejected_time ON rejected (time);

CREATE TABLE broker_log (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    level TEXT NOT NULL,
    event TEXT NOT NULL,
    client_id TEXT,
    address TEXT,
    line TEXT NOT NULL
);
CREATE INDEX broker_log_time ON broker_log (time);
CREATE INDEX broker_log_client ON broker_log (client_id, time);

CREATE TABLE broker_clients (
    client_id TEXT NOT NULL,
    address TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    connects BIGINT NOT NULL,
    PRIMARY KEY (client_id, address)
);
