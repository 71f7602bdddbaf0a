"""CRLs: partition layout, DER building and signing, the pre-publish gate. Pure: no I/O."""
