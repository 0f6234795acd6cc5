"""Exceptions raised by tunnelwatch.

One root, with a ``retriable`` flag telling the caller whether trying the same
operation again later can succeed::

    TunnelwatchError                 (retriable=False)
    ├── ConfigError                  a data file (catalog, knowledge base,
    │   ├── CatalogError             scenario) or an option is invalid
    │   └── KnowledgeBaseError
    ├── InputError                   an input file is missing or unreadable
    └── BrokerError                  Kafka is missing, down or misbehaving
        ├── BrokerUnavailable        (retriable=True) not reachable now
        └── BrokerSetupError         Java/Maven missing, jars unavailable

The parser never raises: lines it cannot read become ``Unparsed`` results.
"""

from __future__ import annotations


class TunnelwatchError(Exception):
    """Root of every tunnelwatch exception."""

    retriable: bool = False


class ConfigError(TunnelwatchError):
    """A configuration or data file is invalid."""


class CatalogError(ConfigError):
    """The message catalog failed validation."""


class KnowledgeBaseError(ConfigError):
    """The knowledge base failed validation."""


class InputError(TunnelwatchError):
    """An input file is missing or cannot be read."""


class BrokerError(TunnelwatchError):
    """A problem with the Kafka broker."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached right now; try again later."""

    retriable = True


class BrokerSetupError(BrokerError):
    """The local broker cannot be installed or started (Java, Maven, jars)."""
