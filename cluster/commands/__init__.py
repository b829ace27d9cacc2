"""One module per `cluster` subcommand."""
