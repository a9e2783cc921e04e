"""Models (promoted ones and the public base-model stand-ins) and long-running operations."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from fwemu.emulator.auth import PUBLIC_ACCOUNT, caller_account, require_same_account
from fwemu.emulator.controlplane.promotion import operation_view
from fwemu.emulator.errors import not_found
from fwemu.emulator.lazy_routes import LazyAPIRoute
from fwemu.emulator.services import Services, get_services

router = APIRouter(tags=["control plane: models and operations"], route_class=LazyAPIRoute)


def base_model_record(model_id: str) -> dict:
    """Any accounts/fireworks/models/<id> exists: the trainer serves it with a tiny stand-in."""
    return {
        "name": f"accounts/{PUBLIC_ACCOUNT}/models/{model_id}",
        "displayName": model_id,
        "state": "READY",
        "kind": "HF_BASE_MODEL",
        "public": True,
        "baseModelDetails": {"moe": False, "modelType": "llama", "worldSize": 1,
                             "checkpointFormat": "HUGGINGFACE", "parameterCount": "1000000"},
        "description": "fwemu stand-in: a deterministic tiny LLaMA-style model",
    }


@router.get("/v1/accounts/{account}/models/{model_id}")
def get_model(account: str, model_id: str, caller: str = Depends(caller_account),
              services: Services = Depends(get_services)):
    if account == PUBLIC_ACCOUNT:
        return base_model_record(model_id)
    require_same_account(caller, account, f"model {model_id}")
    model = services.store.get_model(account, model_id)
    if model is None:
        raise not_found(f"model accounts/{account}/models/{model_id} not found")
    return model


@router.get("/v1/accounts/{account}/models")
def list_models(account: str, caller: str = Depends(caller_account), services: Services = Depends(get_services)):
    require_same_account(caller, account, f"account {account}")
    models = services.store.list_models(account)
    return {"models": models, "nextPageToken": "", "totalSize": len(models)}


@router.get("/v1/accounts/{account}/operations/{op_id}")
def get_operation(account: str, op_id: str, caller: str = Depends(caller_account),
                  services: Services = Depends(get_services)):
    require_same_account(caller, account, f"operation {op_id}")
    found = services.store.poll_operation(account, op_id)
    if found is None:
        raise not_found(f"operation accounts/{account}/operations/{op_id} not found")
    op, polls_left = found
    return operation_view(op, polls_left - 1 if polls_left > 0 else 0)


@router.get("/v1/operations/{op_id}")
def get_operation_short(op_id: str, caller: str = Depends(caller_account),
                        services: Services = Depends(get_services)):
    """The short form some clients poll; resolved within the caller's account."""
    return get_operation(caller, op_id, caller, services)
