-- The sender asks for the oldest pending row of every (destination, channel): this index answers it with
-- one ordered pass over the pending rows instead of a lookup per row.
CREATE INDEX outbox_heads ON outbox (state, url, bucket, channel, id);
