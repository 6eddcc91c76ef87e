"""deadpixel: self-hosted email open tracking."""

__version__ = "0.1.0"
