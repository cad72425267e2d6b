-- Version 2: an event's Id is unique per device, not across the fleet.
-- The key of `events` becomes (event_id, device, item): a message an agent
-- sends again with other bytes (after a crash, re-batched) but the same
-- event Ids stores its events once, and one device cannot shadow another's
-- events by reusing their Ids. SQLite cannot change a table's key in place,
-- so the table is rebuilt (the same SQL on both databases); on a large
-- table this takes a while once, at the first start of this version.

CREATE TABLE events_v2 (
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
    -- Id first: the `event ID` command and /events/ID look an event up by
    -- its Id alone, through this key.
    PRIMARY KEY (event_id, device, item)
);

INSERT INTO events_v2 (event_id, item, device, kind, category, time, hit_count, process_id, parent_process_id,
    executable, command_line, user_id, user_name, remote_address, remote_port, local_address, local_port,
    direction, protocol, operation, path, result, payload, message_id)
SELECT event_id, item, device, kind, category, time, hit_count, process_id, parent_process_id,
    executable, command_line, user_id, user_name, remote_address, remote_port, local_address, local_port,
    direction, protocol, operation, path, result, payload, message_id
FROM events;

DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;

CREATE INDEX events_time ON events (time);
CREATE INDEX events_device_time ON events (device, time);
CREATE INDEX events_kind_time ON events (kind, time);
