"""The app's screens: setup, training dashboard, image gallery, runs and small modals."""
