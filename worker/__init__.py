"""Worker role: learns from the Redis stream, one sample at a time, and writes snapshots."""
