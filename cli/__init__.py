"""nodenet.cli: the `nodenet` command."""
