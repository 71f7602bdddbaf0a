"""Signing key sources: PEM files now; a PKCS#11 token implements the same SigningKey."""
