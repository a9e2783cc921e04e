"""The trainer gateway: `/training/v1/rlorTrainerJobs/{account}/{job}/api/v1/...` (docs/wire.md B).

One concept per module:
    routes       FastAPI handlers; checks caller, job and state; `router` is what create_app includes
    runtime      sessions and models per job incarnation (dropped on :resume / delete / reset)
    sequencer    one worker thread per model, running requests in seq_id order
    futures      request ids, results, long-polled retrieve_future
    operations   the work each request runs on its worker, and its success payload
    checkpoints  save / load against the store (inspector-checked), cross_job refs, quirk and break

torch is imported only by `operations.create_model` (through emulator.trainer), never at import.
"""
