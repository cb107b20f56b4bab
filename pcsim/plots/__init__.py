"""Matplotlib figures: data in, Figure out, no computation. Imported only when plotting."""
