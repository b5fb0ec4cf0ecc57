"""The control plane's supervisor: the daemon `mimocorb2d` and the run engine it shares with `mimocorb2 run`.

Modules (one concept each):

* ``run``         :class:`Run` and its :class:`Phase`: start, stop, drain, abort, end of a run
* ``policy``      pure decisions: restart / retire / fail, backoff per process, drain victims
* ``processes``   process records, spawn (sentinel on the loop), reap, kill
* ``gateway``     the one way into the buffers: blocking calls in threads, safe close
* ``sampler``     counters, stats, ``stats.csv``, CPU per process, free disk
* ``status``      the status reply (one builder for the socket and the web page)
* ``logs``        reading worker logs
* ``handlers``    one handler per protocol command; ``dispatch(cmd, args, peer)``
* ``server``      :class:`Daemon`: lifecycle, signals, systemd notifications
* ``foreground``  ``mimocorb2 run``: the same Run in the terminal
* ``errors``      :class:`RunError`
* ``sdnotify``, ``cli``

Nothing in the data path imports this package, and neither does ``mimocorb2.control``.
"""
