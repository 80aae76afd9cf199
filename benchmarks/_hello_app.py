"""A bare FastAPI hello-world: the baseline ``bench_api.py`` serves beside the example app.

One sync route (the example app's routes are sync too), no middleware, no database.
Served with ``uvicorn _hello_app:app --app-dir benchmarks``.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, str]:
    """Return a constant."""
    return {"hello": "world"}
