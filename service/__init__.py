"""Service role: the FastAPI app serving predictions from the newest snapshot."""
