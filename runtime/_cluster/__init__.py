"""The cluster: nodes that share one database and know of each other through it."""
