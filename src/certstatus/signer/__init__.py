"""The signing loop: claims due certificates, signs on all cores, stores under the status guard."""

from certstatus.signer.loop import Signer

__all__ = ["Signer"]
