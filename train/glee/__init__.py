"""GLEE training losses: box ops, PointRend point sampling, the Hungarian matcher and the set criterion."""
