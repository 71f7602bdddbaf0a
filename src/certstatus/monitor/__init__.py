"""Watching the system from inside and outside: the heartbeat now; metrics and the watchdog later."""
