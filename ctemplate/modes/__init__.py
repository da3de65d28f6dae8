"""Modes that drive the loop differently: :mod:`.exec` (supervise the process the files
configure), :mod:`.init` (ctemplate as process 1 of a container), :mod:`.dedup` (one instance
per template reads Consul for a fleet), and ``consul watch``'s:

* :mod:`.watch`: ``consul watch``'s loop (seven types), handlers run without overlap;
* :mod:`.handlers`: script and HTTP handlers (stdin JSON, ``CONSUL_INDEX``, process groups);
* :mod:`.daemon`: the daemon's ``watch`` blocks;
* :mod:`.commands`: the ``ctemplate watch`` and ``ctemplate event`` subcommands.
"""
