"""Modes that drive the loop differently: :mod:`.exec` (supervise the process the files
configure) and :mod:`.init` (ctemplate as process 1 of a container)."""
