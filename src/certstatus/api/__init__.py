"""The issuance API (`certstatus api`): the CA's systems record certificates and revocations over
mutually authenticated TLS, with an audit trail (app.py routes, auth.py identities and TLS,
bodies.py parsing, limits.py rate limits, openapi.py the document, server.py the listener)."""
