"""Small shared utilities: atomic file writes, seeding, thread settings, progress display."""
