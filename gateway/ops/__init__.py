"""Operations: truthful /health, Prometheus /metrics, certificate and CRL expiry alerts, and the status page.

Everything here reads (the journal through ``gateway.journal.queries``, never a write) and observes (one-line
calls from the transport and pipeline into ``metrics``); nothing here changes what the gateway does.
"""
