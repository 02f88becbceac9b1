"""The training core: data, models, engine, runs and export, without a UI.

Nothing under workbench.core imports Textual; a test enforces it.
"""
