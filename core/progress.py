"""How long work says how far it got: ``progress(done, total)``, called by core and drawn by the front ends
(a Rich bar in the CLI, a Textual one in the explorer). The one shape for evaluations and the demo data."""

from collections.abc import Callable

Progress = Callable[[int, int], None]
