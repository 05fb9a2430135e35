"""The ebMS3/AS4 message layer: model, building, parsing, MIME packaging, compression (sans-I/O)."""
