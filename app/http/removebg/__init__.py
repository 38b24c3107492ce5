"""remove.bg's v1.0 API: ``POST /v1.0/removebg`` and ``GET /v1.0/account``; every path under /v1.0/ is its."""

from app.http.api import Api
from app.http.removebg import errors, openapi, routes

api = Api(
    name="removebg",
    router=routes.router,
    error=errors.RemoveBgError,
    internal_error=lambda: errors.internal_error().response(),
    routing_error=errors.unknown_operation,
    operation_paths=(routes.REMOVEBG_PATH,),
    openapi=openapi.document,
    path_prefix=routes.PATH_PREFIX,
)
