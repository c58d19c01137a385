"""The `fid` evaluate metric module (see fid.py)."""
