from certstatus.purger.service import PurgeService

__all__ = ["PurgeService"]
