"""The filing pipeline: intake, sending with reception awareness, correlation, delivery, the daemon."""
