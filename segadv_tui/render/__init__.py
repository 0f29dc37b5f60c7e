"""What the CLI and the explorer both draw: PNG figures, tables, RGB imagery, the half-block renderer
and the choice of terminal picture renderer. No Textual here, and no torch."""
