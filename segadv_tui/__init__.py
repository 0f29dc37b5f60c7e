"""segadv's front ends: the Typer CLI (``segadv``) and the Textual explorer (``segadv-tui``)."""
