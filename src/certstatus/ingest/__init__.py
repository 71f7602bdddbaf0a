"""Recording issuance and revocation: the status system learns of a serial before it is published (F2)."""

from certstatus.ingest.api import Ingest, IngestError, read_certificate_file

__all__ = ["Ingest", "IngestError", "read_certificate_file"]
