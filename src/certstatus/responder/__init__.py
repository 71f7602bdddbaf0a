"""The HTTP responder: a stateless web node that serves pre-signed responses."""
