"""The pure core: no I/O, no wall clock."""
