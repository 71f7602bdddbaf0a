"""Expiry housekeeping: certificates past their notAfter leave the freshness metrics at once
and the database after the retention, in bounded batches, so a CA's steady state does not
grow without bound. One of the signing roles (it runs beside the signer, on the primary)."""

from certstatus.housekeeping.service import Housekeeping, HousekeepingPass

__all__ = ["Housekeeping", "HousekeepingPass"]
