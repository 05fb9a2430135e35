"""Transport: 2-way TLS client and server, the pull loop, routing; turns engine results into HTTP and back.

Modules: ``tls`` (SSL contexts), ``config`` ([tls], [[endpoints]], [routing], [inbound], [pull], [health]),
``client`` (push and pull requests with typed outcomes), ``server`` (inbound push + health), ``puller``
(adaptive pull loop and the acknowledgement lane), ``routing`` (which Trader Interface gets a filing).
"""
