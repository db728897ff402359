"""Load generation: the senders and loops that measure a server, and what one served run records."""
