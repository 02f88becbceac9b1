"""Search: an Optuna study behind `workbench sweep --search tpe`; trials are normal runs through the one engine."""
