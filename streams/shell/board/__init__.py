"""``tunnelwatch board``: the live incident board (aiohttp, server-sent events)."""
