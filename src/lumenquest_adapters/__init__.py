"""lumenquest adapters: memory, SQLAlchemy, Stripe, SendGrid and Redis."""
