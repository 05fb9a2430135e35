"""The customs Trader Interface stand-in (``ics2gw simulate``): receives filings over AS4 like the STI does,
answers receipts or ebMS errors synchronously, then replies with ICS2 business messages by push or pull.

Modules: ``config`` (conf/simulator.toml), ``faults`` (run-time switchable fault knobs), ``registry`` (its own
SQLite store), ``replies`` (payload builders), ``business`` (pure decision logic), ``server`` (the HTTPS
endpoint and the admin endpoint), ``pusher`` (push delivery), ``host`` (what ``server`` and ``pusher`` need from
the running simulator, so neither imports ``app``), ``app`` (wiring, start/stop).
"""
