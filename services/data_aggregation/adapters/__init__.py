"""Persistence of facts and cursors, and the readers of the other services' event feeds."""
