"""The HTTP server behind `omendb serve`: FastAPI on uvicorn, with metrics on their own port."""
