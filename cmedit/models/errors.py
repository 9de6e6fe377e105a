"""The model-loading error, apart from the loaders so that code which only catches it imports no model code."""


class ModelLoadError(ValueError):
    """The model cannot be found or is not a consistency model; the message is one line."""
