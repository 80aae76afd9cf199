"""The routes, one module per audience: auth, public, user, admin, webhooks and probes."""
