"""One run lifecycle: a run's rows folded into what a dashboard shows (view), read from a run
folder that another process writes (follow), or live from the engine in this process."""
