"""webhook-router: events in over ZeroMQ, signed webhooks out."""

__version__ = "0.1.0"


class RouterError(Exception):
    """Root of every error the router raises on purpose; the message is for the operator."""


class ConfigError(RouterError):
    """The configuration file is invalid; ``errors`` holds every ``FILE:LINE: key: message``."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class ControlError(RouterError):
    """The control socket did not answer, or answered with an error."""
