"""`python -m bench` (`make bench`): throughput, latency, memory and the crypto limit, measured side by side.

Modules: ``payloads`` (generated ENS payloads), ``limit`` (raw RSA, gzip, SHA-256, c14n: the crypto floor),
``micro`` (seal / verify per core; streaming pack / inspect of 100 MB in child processes), ``peer``
(Apache Santuario verifying the same message in one JVM), ``e2e`` (daemon + simulator over loopback TLS),
``report`` (table and bench/results.json). See docs/benchmarks.md.
"""
