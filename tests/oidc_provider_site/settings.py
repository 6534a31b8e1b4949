"""Django settings for the OpenID provider the login tests start on loopback.

The provider is the ``django-oidc-provider`` package (not code of ours); this file, urls.py
and the login template are the glue that turns it into a running site. The database,
issuer URL and secret key come from the environment the test set-up passes.
"""

import os

BASE_DIR = os.path.dirname(os.path.abspath(__file__))
SECRET_KEY = os.environ["OP_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oidc_provider",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [os.path.join(BASE_DIR, "templates")],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ["OP_DATABASE"]}}
USE_TZ = True
LOGIN_URL = "/accounts/login/"
SITE_URL = os.environ["OP_SITE_URL"]
OIDC_USERINFO = "userinfo.claims"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
