"""Signing keys and the certificates they sign for.

Keys are read from PEM files (pem.py); the signer and the CRL builder see only the SigningKey
interface (base.py), so another source, such as a PKCS#11 token, would implement that interface
and change no caller. No such source exists yet: PEM files are the only one. certificates.py
reads certificates and checks a delegated responder certificate (R6, R21, F8).
"""
