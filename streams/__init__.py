"""tunnelwatch: Cisco IOS/ASA syslog in, diagnosed VPN incidents out.

``streams.core`` is the pure functional core (parsing, catalog, knowledge base,
correlation engine). ``streams.shell`` holds everything that does I/O (receiver,
Kafka worker, broker tooling). ``streams.cli`` is the command line.
"""

__version__ = "0.1.0"
