"""The one exception the importer raises for problems a person can fix."""


class GGUFImportError(Exception):
    """A GGUF file that cannot be imported; the message says what was expected, what was found,
    and what to do."""
