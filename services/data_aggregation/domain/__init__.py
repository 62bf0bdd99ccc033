"""Pure data-middle-platform logic: facts, the day's roll-up, settlement-time percentiles."""
