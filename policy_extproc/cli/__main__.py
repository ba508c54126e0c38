"""``python -m policy_extproc.cli``."""

from policy_extproc.cli import main

main()
