"""fangpin: learning which households are likely to be newly identified for monitoring."""
__version__ = "0.1.0"
