"""`/docs`: the Swagger UI for the server's OpenAPI description, served offline.

FastAPI's default page loads Swagger UI's script and stylesheet from a public
CDN, so on a network without internet access (a hospital's, typically) it is
blank. Here the same assets come from the installed `swagger-ui-bundle`
package under `/docs/assets/`. `/redoc` (also CDN-based) is not offered.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def attach_docs(app: FastAPI, title: str) -> None:
    """Add `/docs` and its assets (call with FastAPI(docs_url=None, redoc_url=None))."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="swagger-ui-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
