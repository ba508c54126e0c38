"""``python -m policy_extproc.mockprovider --listen HOST:PORT``."""

import sys

from policy_extproc.mockprovider.server import main

sys.exit(main())
