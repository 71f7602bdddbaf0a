"""The CRL builder role: builds due CRLs, passes them through the gate, publishes them."""

from certstatus.crlbuilder.service import BuildResult, CrlService

__all__ = ["BuildResult", "CrlService"]
