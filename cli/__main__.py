"""`python -m nodenet.cli` runs the `nodenet` command."""

from nodenet.cli.main import main

main()
