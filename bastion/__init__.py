"""Bastion: a security gateway and authorization server for the Model Context Protocol."""

__version__ = "0.1.0"
__all__ = ["__version__"]
