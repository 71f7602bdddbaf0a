"""`certstatus demo`: a whole CA status service on SQLite in one process, for a laptop."""
