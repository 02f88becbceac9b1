"""A trained run as a bundle that loads without pickle, verified format by format, and predict."""
