"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class AgekitError(Exception):
    """A problem with the user's input (file, config, flag). The message is shown to the user as is."""


class ImageError(AgekitError):
    """One image could not be used. Batches count and skip these; single-file commands report them."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
