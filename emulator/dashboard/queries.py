"""What each dashboard page shows, read from the store for one account: view data, no HTML.

Rows, kinds and promotability come from the same store calls and view rules as the API listing
(`checkpoint_views`), so the page can never disagree with `GET .../checkpoints`. Everything is
read with the caller's own account; a job id of another account is simply not found.
"""

from __future__ import annotations

import threading

from fwemu.emulator import jobs, rules
from fwemu.emulator.controlplane.access import load_job
from fwemu.emulator.controlplane.checkpoint_views import listed_kind, listed_promotable
from fwemu.emulator.dashboard import explain as explainer
from fwemu.emulator.dashboard.svg_chart import Series, line_chart
from fwemu.emulator.dashboard.views import ExplainView, JobView, ModelView, RejectedView, RowView
from fwemu.emulator.errors import not_found
from fwemu.emulator.services import Services
from fwemu.emulator.store import Job, metrics_log, rfc3339

ACTIVE_WINDOW_US = 120 * 1_000_000  # a running job counts as training this long after its last step
REFRESH_S = 5


def is_training(state: str, now_us: int, last_activity_us: int) -> bool:
    """Starting, or running with a step (or its start) in the last ACTIVE_WINDOW_US: refresh the page."""
    if state in jobs.STARTING:
        return True
    return state == jobs.RUNNING and now_us - last_activity_us <= ACTIVE_WINDOW_US


def _job_view(services: Services, job: Job, last: dict | None, steps: int | None = None) -> JobView:
    state = jobs.state_at(job, services.clock.peek_us())
    return JobView(job_id=job.job_id, state=state, base_model=job.base_model, create_time=rfc3339(job.create_us),
                   lora_rank=job.lora_rank, steps=steps if steps is not None else int((last or {}).get("step") or 0),
                   last_loss=metrics_log.loss_per_token(last) if last else None, deleted=job.deleted_us is not None)


def _activity(job: Job, last: dict | None) -> int:
    return max(job.ready_us, int((last or {}).get("t") or 0))


def index(services: Services, account: str) -> tuple[list[JobView], list[ModelView], list[str], bool]:
    store, now = services.store, services.clock.peek_us()
    views, live = [], False
    for job in store.list_jobs(account):
        last = store.step_log.last(account, job.job_id, job.create_us)
        view = _job_view(services, job, last)
        live = live or is_training(view.state, now, _activity(job, last))
        views.append(view)
    models = [model_view(m) for m in store.list_models(account)]
    return views, models, [], live  # deployments: the emulator stores none


def model_view(record: dict) -> ModelView:
    source = record.get("sourceCheckpoint") or ""
    parts = source.split("/")  # accounts/<a>/rlorTrainerJobs/<job>/checkpoints/<name>
    job_id = parts[3] if len(parts) == 6 and parts[2] == "rlorTrainerJobs" and parts[4] == "checkpoints" else None
    return ModelView(model_id=str(record.get("name", "")).rsplit("/", 1)[-1], kind=str(record.get("kind", "")),
                     state=str(record.get("state", "")), create_time=str(record.get("createTime", "")),
                     checkpoint_type=record.get("checkpointType"), source_job=job_id,
                     source_checkpoint=parts[5] if job_id else None)


def job(services: Services, account: str, job_id: str, page_size: int, page_token: str | None):
    """(job, rows, next token, rejected, charts, training?) for the job page; ValueError for a bad token."""
    store, settings = services.store, services.settings
    j = load_job(services, account, account, job_id)
    rows, token = store.list_checkpoints(account, job_id, page_size, page_token)
    row_views = []
    for r in rows:
        kind = listed_kind(r, settings)
        row_views.append(RowView(
            name=r.name, kind=kind.wire if kind else None, resumable=bool(kind and rules.is_resumable(kind)),
            promotable=listed_promotable(kind, settings), create_time=rfc3339(r.create_us),
            size=explainer.dir_size(store.checkpoint_dir(account, job_id, r.name))))
    rejected = [RejectedView(r.name, r.reason or "", r.claimed_kind, rfc3339(r.create_us))
                for r in store.rejected_checkpoints(account, job_id)]
    steps = store.step_log.summary(account, job_id, j.create_us)
    view = _job_view(services, j, steps.last, steps=steps.count)
    live = is_training(view.state, services.clock.peek_us(), _activity(j, steps.last))
    log_key = (store.step_log.token, account, job_id, j.create_us)
    return view, row_views, token, rejected, charts_of(steps, log_key), live


def charts(records: list[dict], log_key: tuple | None = None) -> list[str]:
    """The loss and gradient-norm charts of a list of records (see charts_of)."""
    return charts_of(metrics_log.StepSummary(len(records), records[-1] if records else None,
                                             metrics_log.chart_columns(records)), log_key)


def charts_of(steps: metrics_log.StepSummary, log_key: tuple | None = None) -> list[str]:
    """The loss and gradient-norm charts: one series per model, one point per optimizer step.

    With `log_key` (the log's identity), the SVG is reused while the log has no new record: a page
    that refreshes while nothing trains costs no chart work."""
    last = steps.last or {}
    key = None if log_key is None else (*log_key, steps.count, last.get("t"), last.get("model"), last.get("step"))
    with _charts_lock:
        if key is not None and key in _charts_cache:
            return _charts_cache[key]
    loss, norm = [], []
    for label, (losses, norms) in steps.columns.items():
        loss.append(Series(label, list(enumerate(losses, 1))))
        norm.append(Series(label, list(enumerate(norms, 1))))
    out = [line_chart(loss, title="loss per token (forward_backward, summed over each step)",
                      x_label="optimizer step", y_label="loss / token", integer_x=True),
           line_chart(norm, title="gradient norm before clipping (optim_step)", x_label="optimizer step",
                      y_label="grad norm", integer_x=True)]
    if key is not None:
        with _charts_lock:
            _charts_cache[key] = out
            while len(_charts_cache) > 16:
                _charts_cache.pop(next(iter(_charts_cache)))
    return out


_charts_lock = threading.Lock()
_charts_cache: dict[tuple, list[str]] = {}


def explain(services: Services, account: str, job_id: str, name: str) -> ExplainView:
    store = services.store
    load_job(services, account, account, job_id)
    row = store.get_checkpoint(account, job_id, name)
    if row is None:
        raise not_found(f"checkpoint {name} not found in trainer job {job_id}")
    x = explainer.explain_dir(store.checkpoint_dir(account, job_id, name))
    v = x.verdict
    return ExplainView(
        job_id=job_id, name=name, stored_kind=row.kind.wire if row.kind else None, stored_reason=row.reason,
        claimed_kind=row.claimed_kind, details=dict(row.details), create_time=rfc3339(row.create_us),
        update_time=rfc3339(row.update_us), exists=x.exists,
        live_kind=v.kind.wire if v and v.kind else None,
        live_reason=(v.reason if v else "the directory is missing"),
        hint=(v.details.get("hint") if v and v.kind is None else None),
        deciding_file=x.deciding_file, deciding_rule=x.deciding_rule, files=x.files, reads=x.reads,
        bytes_read=v.bytes_read if v else 0)
