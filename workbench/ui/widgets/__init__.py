"""Widgets that each show one piece of training data: charts, form, status, image preview."""
