"""Modes that drive the loop differently from rendering templates.

* :mod:`.watch`: ``consul watch``'s loop (seven types), handlers run without overlap;
* :mod:`.handlers`: script and HTTP handlers (stdin JSON, ``CONSUL_INDEX``, process groups);
* :mod:`.commands`: the ``ctemplate watch`` and ``ctemplate event`` subcommands.
"""

from __future__ import annotations
