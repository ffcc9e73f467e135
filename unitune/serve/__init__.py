"""`unitune serve`: an OpenAI-compatible HTTP API (app.py) over the inference engine."""
