def claims(claims, user):
    """The standard claims of the provider's users."""
    claims["name"] = user.get_full_name() or user.username
    claims["preferred_username"] = user.username
    claims["email"] = user.email
    return claims
