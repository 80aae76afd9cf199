"""``python -m asgi_app`` (with ``examples/`` on ``sys.path``): serve the app with uvicorn.

``--demo`` first seeds the demo plans and an administrator and prints its credentials
(``make run`` does this on an SQLite file).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn

from asgi_app.main import create_app
from asgi_app.seed import seed_admin, seed_plans

__all__ = ["main", "serve"]


def serve(host: str = "127.0.0.1", port: int = 8000, *, demo: bool = False) -> None:
    """Build the app from the environment (seeding the demo data if asked) and serve it."""
    app = create_app()
    if demo:
        context = app.state.context
        created = seed_plans(context)
        admin = seed_admin(context)
        database = context.database.engine.url.render_as_string(hide_password=True)
        print("lumenquest demo")
        print(f"  database      : {database} (migrated)")
        print(f"  plans created : {', '.join(created) or 'none (already there)'}")
        print(f"  admin email   : {admin.email}")
        print(f"  admin password: {admin.password}   (new on every start)")
        print(f"  API docs      : http://{host}:{port}/docs")
    # Our middleware writes one JSON line per request; uvicorn's access log would repeat
    # it, with the query string (where a careless client may put a token).
    uvicorn.run(app, host=host, port=port, access_log=False, proxy_headers=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(prog="python -m asgi_app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--demo", action="store_true", help="seed demo plans and an admin")
    options = parser.parse_args(argv)
    serve(options.host, options.port, demo=options.demo)


if __name__ == "__main__":
    main()
