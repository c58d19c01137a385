"""The `inception_score` evaluate metric module (see inception_score.py)."""
