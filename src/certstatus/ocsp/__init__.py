"""OCSP protocol: request decoding, CertID matching, response building. Pure: no I/O."""
