"""wanmon: network inventory and WAN monitoring agent."""

__version__ = "0.1.0"
