"""The imperative shell: everything that touches files, sockets, Kafka or the clock."""
