"""``tunnelwatch notify``: incidents from vpn.incidents to Alertmanager and webhooks."""
