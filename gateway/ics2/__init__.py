"""ICS2 and ICS phase-1 payload knowledge: which messages exist, what a payload says, and whether customs would
accept it. Knows nothing about AS4.

* ``catalogue``: the message catalogue (ids, direction, kind, priority, correlation reference).
* ``inspect``: facts extracted from a payload (message id, LRN, MRN, EORIs, office of first entry ...).
* ``validate``: local pre-validation (``validate_payload``), delegating to ``xsd``, ``ics1_rules``, ``ics2_rules``.
* ``rules``: the table of conditions and rules with their local-check status.
"""
