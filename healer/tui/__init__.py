"""The terminal UI (`healer tui`): Textual, read-only, fed by snapshots of the store's read views."""
