"""client/recipes."""
