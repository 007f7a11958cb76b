"""migtui: a terminal console for QEMU live migration."""

__version__ = "0.1.0"
