"""Exit codes shared by every command, so scripts can tell outcomes apart.

0 success / valid; 1 negative verdict (invalid message, failed check, rejected filing); 2 the input could
not be read (missing file, unparsable data, usage error); 3 configuration error; 4 runtime failure
(network, peer, journal).
"""

OK = 0
INVALID = 1
UNREADABLE = 2
CONFIG = 3
RUNTIME = 4
