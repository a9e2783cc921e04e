"""create_app(settings): one FastAPI app with the control plane, the trainer gateway and admin routes.

Building the app imports no torch: the gateway loads the trainer the first time a model is created.
Each route is analysed by FastAPI on its first request (emulator/lazy_routes.py), so start-up stays
close to a bare FastAPI app's.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from fwemu.emulator import __version__
from fwemu.emulator.admin.routes import router as admin_router
from fwemu.emulator.body_limit import BodyLimitMiddleware
from fwemu.emulator.controlplane.routes import routers as controlplane_routers
from fwemu.emulator.dashboard.routes import router as dashboard_router
from fwemu.emulator.deployments.runtime import install as install_deployments
from fwemu.emulator.deployments.serving_routes import routers as deployment_routers
from fwemu.emulator.faults import install as install_faults
from fwemu.emulator.gateway.routes import router as gateway_router
from fwemu.emulator.http_errors import install_error_handlers
from fwemu.emulator.lazy_routes import add_routes
from fwemu.emulator.openapi_doc import install_docs_page, install_openapi
from fwemu.emulator.services import Services
from fwemu.emulator.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    services = Services.create(settings)
    install_deployments(services)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        services.close()

    app = FastAPI(title="fwemu", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Local emulator of the Fireworks fine-tuning checkpoint surface.")
    app.state.services = services
    install_error_handlers(app)
    add_routes(app, *controlplane_routers, *deployment_routers, gateway_router, admin_router, dashboard_router)
    install_faults(app, services)
    install_openapi(app)
    install_docs_page(app)
    app.add_middleware(BodyLimitMiddleware, control_plane_bytes=settings.max_control_plane_body_bytes,
                       gateway_bytes=settings.max_gateway_body_bytes)
    return app
