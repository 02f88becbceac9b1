"""The airbench94-style speedrun: a recipe the one engine runs, not a trainer of its own."""
