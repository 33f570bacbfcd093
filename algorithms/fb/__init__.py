"""FB family: shared losses and networks, and one file per algorithm (fb.py, onestep_fb.py)."""
