"""The example ASGI app: the whole Lumen Quest backend as a thin FastAPI layer over ``Billing``.

Import it with ``examples/`` on ``sys.path``: ``from asgi_app.main import create_app``.
"""
