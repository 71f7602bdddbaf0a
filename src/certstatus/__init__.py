"""certstatus: the certificate-status side of a certificate authority."""

__version__ = "0.1.0"
