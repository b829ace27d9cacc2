"""The boltpipe coordinator and CLI."""
