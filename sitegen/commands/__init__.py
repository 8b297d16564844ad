"""One module per ``sitegen`` verb (see ``sitegen.cli.COMMANDS``)."""
