"""The `kid` evaluate metric module (see kid.py)."""
