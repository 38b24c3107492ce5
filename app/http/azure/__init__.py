"""Azure AI Vision's ``imageanalysis:segment``, as its cloud endpoint answers it; the gateway: a path no API owns is
answered in Azure's words (API Management's 404)."""

from app.http.api import Api
from app.http.azure import errors, openapi, routes

api = Api(
    name="azure",
    router=routes.router,
    error=errors.AzureError,
    internal_error=lambda: errors.internal_error().response(),
    routing_error=lambda status: errors.resource_not_found(),  # APIM answers an unknown method with its 404 too
    operation_paths=routes.SEGMENT_PATHS,
    openapi=openapi.document,
    mode_query="mode",
    answer_headers=lambda request_id: {"apim-request-id": request_id, "api-supported-versions": errors.API_SUPPORTED_VERSIONS},
)
