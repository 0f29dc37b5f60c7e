"""The panels of segadv-tui, one module each."""
