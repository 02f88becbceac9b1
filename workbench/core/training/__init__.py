"""The one training engine: fit() in `engine`, its flat loop in `loop`, and the parts a recipe supplies."""
