"""Control plane: the socket protocol, the daemon's request handlers and the `mimoctl` client.

Nothing in the data path imports this package.
"""
