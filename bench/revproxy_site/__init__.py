"""A minimal Django project whose only view is django-revproxy's ProxyView: the bench's Django baseline."""
