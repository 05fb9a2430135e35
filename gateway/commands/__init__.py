"""One module per ``ics2gw`` subcommand; see ``gateway.cli``."""
