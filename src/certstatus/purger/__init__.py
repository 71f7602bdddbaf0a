"""The purger role: delivers the purge queue (filled by revocations and CRL publications) to
every configured cache, each by its own thread. It is one of the signing roles, so it runs in
`certstatus signer` and in `certstatus serve` with run_signer = true."""

from certstatus.purger.service import PurgeService

__all__ = ["PurgeService"]
