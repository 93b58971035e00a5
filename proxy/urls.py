urlpatterns: list = [
    # The relay view arrives with the proxy issue; DESIGN.md: ANY /proxy/<upstream>/<key_id>/<path>.
]
