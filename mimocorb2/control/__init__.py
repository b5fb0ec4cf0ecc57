"""Control plane, client side and wire: the socket protocol, the socket server and the `mimoctl` client.

The server hands every request to a ``dispatch(cmd, args, peer)`` coroutine it is
given (the daemon's, in :mod:`mimocorb2.supervisor.handlers`); nothing here imports
:mod:`mimocorb2.supervisor`, and nothing in the data path imports this package.
"""
