"""What a model sees and gets wrong, as files: predictions, exact-pixel grids, confusion, summaries."""
