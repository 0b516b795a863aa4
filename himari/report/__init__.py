"""Self-contained HTML reports and plain-language verdicts."""
