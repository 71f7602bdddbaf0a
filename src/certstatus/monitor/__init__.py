"""Watching the system from inside and outside: the heartbeat writer, replication and slot
probes, the 15-minute watchdog, CRL checks, findings, metrics, the status page and the webhook."""
