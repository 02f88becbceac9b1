"""workbench: train image classifiers from the keyboard, in one terminal."""

__version__ = "0.1.0"
