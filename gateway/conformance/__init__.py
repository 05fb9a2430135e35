"""The conformance runner and the negative-test message builder."""
