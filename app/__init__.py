"""LayerScope's Qt desktop front end: the only package that imports Qt."""
