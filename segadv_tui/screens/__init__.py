"""The explorer's screens: the explorer itself, its help and Table II."""
