import urllib3
from django.conf import settings
from django.urls import re_path
from revproxy.views import ProxyView

# Shared by every request of the process and sized like the product's pool: the stock PoolManager keeps
# one connection per host, so every thread past the first would open a new TCP connection per request.
POOL = urllib3.PoolManager(maxsize=settings.BENCH_POOL_SIZE, block=False)


class BenchProxyView(ProxyView):
    upstream = settings.BENCH_UPSTREAM_URL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.http = POOL


urlpatterns = [re_path(r"^(?P<path>.*)$", BenchProxyView.as_view())]
