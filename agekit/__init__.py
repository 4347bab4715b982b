"""agekit: facial age and gender estimation toolkit."""

__version__ = "0.1.0"
