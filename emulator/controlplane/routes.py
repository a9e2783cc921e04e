"""The /v1 control plane: the jobs, checkpoints, models and training-shape routers, in matching order."""

from fwemu.emulator.controlplane import checkpoint_routes, job_routes, model_routes, shape_routes

routers = (job_routes.router, checkpoint_routes.router, model_routes.router, shape_routes.router)
