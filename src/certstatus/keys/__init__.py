"""Signing keys and the certificates they sign for.

The signer and the CRL builder see only the SigningKey interface (base.py). A key is named by
a KeyRef (source.py): a PEM file (pem.py, mode 0600 or refused) or a private key on a PKCS#11
token named by an RFC 7512 URI (uri.py, pkcs11.py). certificates.py reads certificates and
checks a delegated responder certificate (R6, R21, F8).
"""
