"""Self-hosted, Azure-compatible background removal."""

__version__ = "0.1.0"
