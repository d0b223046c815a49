# Runs on CPython (host): the /v1 routes, one module per resource.
"""One ``APIRouter`` per resource; ``host.web.app`` mounts them under ``/v1``."""
