"""The terminal app: setup, live dashboard, image gallery and runs, all driven from the keyboard."""
