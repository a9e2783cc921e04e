"""The /v1 control plane: one router composed of the jobs, checkpoints and models routers."""

from fastapi import APIRouter

from emulator.controlplane import checkpoint_routes, job_routes, model_routes

router = APIRouter()
router.include_router(job_routes.router)
router.include_router(checkpoint_routes.router)
router.include_router(model_routes.router)
