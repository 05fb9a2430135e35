"""Sealing and verification (WS-Security, XML-DSig, PkiPath), certificates, trust and TLS contexts."""
