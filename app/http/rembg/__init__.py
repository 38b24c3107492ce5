"""rembg's server API (``rembg s``): ``GET`` and ``POST /api/remove``."""

from app.http.api import Api
from app.http.rembg import errors, openapi, routes

api = Api(
    name="rembg",
    router=routes.router,
    error=errors.RembgError,
    internal_error=errors.internal_error,
    routing_error=errors.http_error,
    operation_paths=(routes.PATH,),
    openapi=openapi.document,
)
