"""One module per `cluster` subcommand, and the helpers several of them share."""
