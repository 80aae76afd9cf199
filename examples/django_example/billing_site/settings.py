"""Settings for the example: the least Django needs to serve JSON views."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["billing_site"]  # for the run_due management command
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "billing_site.urls"
DATABASES: dict[str, dict[str, str]] = {}  # lumenquest keeps its own tables
USE_TZ = True
