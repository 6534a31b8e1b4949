"""Create the provider's tables, signing key, users and one client (test set-up)."""

import os
import sys

import django
from django.core.management import call_command

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from oidc_provider.models import Client, ResponseType  # noqa: E402

users, client_id, client_secret, redirect_uri = sys.argv[1:5]  # users: name:password,...
call_command("migrate", verbosity=0)
call_command("creatersakey")
for item in users.split(","):
    username, password = item.split(":", 1)
    User.objects.create_user(username, email=f"{username}@example.org", password=password,
                             first_name=username.capitalize(), last_name="Example")
client = Client.objects.create(name="ilastik-web", client_id=client_id,
                               client_secret=client_secret, client_type="confidential",
                               require_consent=False, reuse_consent=True,
                               redirect_uris=[redirect_uri])
client.response_types.add(ResponseType.objects.get(value="code"))
print(os.environ["OP_SITE_URL"])
