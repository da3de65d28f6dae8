"""Modes that drive the loop differently: :mod:`.exec` (supervise the process the files
configure), :mod:`.init` (ctemplate as process 1 of a container) and :mod:`.dedup` (one instance
per template reads Consul for a fleet)."""
