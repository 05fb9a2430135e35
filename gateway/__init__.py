"""ics2gw: an AS4 access point gateway for the EU Import Control System 2 (ICS2)."""

__version__ = "0.1.0"
