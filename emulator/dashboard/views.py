"""The dashboard's HTML: pure functions from plain view data to a page string.

Every value is escaped here (names, reasons and model ids come from users and from directory
contents). Pages load one same-origin stylesheet and no script, font or image from anywhere; the
routes send a CSP that forbids anything else. A page that should follow a training job carries
a `<meta http-equiv="refresh">` (works with scripts off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Sequence
from urllib.parse import quote, urlencode

PREFIX = "/dashboard"
CSS_PATH = f"{PREFIX}/static/dashboard.css"
FAVICON_PATH = f"{PREFIX}/static/favicon.svg"  # linked, so the browser never asks for /favicon.ico (a 404)
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           'fill="#24292f"/><polyline points="2,12 6,8 9,10 14,3" fill="none" stroke="#fff" stroke-width="2"/></svg>')

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#24292f;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:bold}
header .who{margin-left:auto;font-size:13px}
header form{display:inline}
main{padding:16px;max-width:1100px}
h1{font-size:20px;margin:8px 0}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eaeef2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.kind{font-family:ui-monospace,monospace;font-size:12px}
.yes{color:#1a7f37;font-weight:bold}.no{color:#57606a}
.bad{color:#d1242f}.note{color:#57606a;font-size:13px}
.box{background:#fff;border:1px solid #d0d7de;padding:8px 12px;margin:8px 0}
.pager a{margin-right:12px}
code{font-family:ui-monospace,monospace;font-size:12px}
button,input{font-size:14px;padding:4px 8px}
svg.chart{background:#fff;border:1px solid #d0d7de;margin:4px 0;max-width:100%;height:auto}
"""


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def job_url(job_id: str, **params: str) -> str:
    q = {k: v for k, v in params.items() if v}
    return f"{PREFIX}/jobs/{quote(job_id, safe='')}" + (f"?{urlencode(q)}" if q else "")


def explain_url(job_id: str, name: str) -> str:
    return f"{PREFIX}/jobs/{quote(job_id, safe='')}/checkpoints/{quote(name, safe='')}"


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def yes_no(flag: bool) -> str:
    return '<span class="yes">yes</span>' if flag else '<span class="no">no</span>'


# ------------------------------------------------------------------------------ view data
@dataclass(frozen=True)
class JobView:
    job_id: str
    state: str
    base_model: str
    create_time: str
    lora_rank: int = 0
    steps: int = 0
    last_loss: float | None = None
    deleted: bool = False


@dataclass(frozen=True)
class RowView:
    name: str
    kind: str | None          # the wire type, e.g. CHECKPOINT_TYPE_TRAINING
    resumable: bool
    promotable: bool
    create_time: str
    size: int | None


@dataclass(frozen=True)
class RejectedView:
    name: str
    reason: str
    claimed_kind: str | None
    create_time: str


@dataclass(frozen=True)
class ModelView:
    model_id: str
    kind: str
    state: str
    create_time: str
    checkpoint_type: str | None
    source_job: str | None
    source_checkpoint: str | None


@dataclass(frozen=True)
class ExplainView:
    job_id: str
    name: str
    stored_kind: str | None
    stored_reason: str | None
    claimed_kind: str | None
    details: dict
    create_time: str
    update_time: str
    exists: bool
    live_kind: str | None
    live_reason: str | None
    hint: str | None
    deciding_file: str
    deciding_rule: str
    files: Sequence = field(default_factory=list)     # explain.ListedFile
    reads: Sequence = field(default_factory=list)     # (file, offset, bytes)
    bytes_read: int = 0


# ------------------------------------------------------------------------------ pages
def layout(title: str, body: str, account: str | None = None, refresh_s: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    who = ""
    if account:
        who = (f'<span class="who">account <b>{e(account)}</b> '
               f'<form method="post" action="{PREFIX}/logout"><button type="submit">Log out</button></form></span>')
    return ("<!DOCTYPE html>"
            f'<html lang="en"><head><meta charset="utf-8"><title>{e(title)} - fwemu</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{refresh}'
            f'<link rel="stylesheet" href="{CSS_PATH}"><link rel="icon" href="{FAVICON_PATH}" type="image/svg+xml">'
            "</head><body>"
            f'<header><a href="{PREFIX}">fwemu dashboard</a>{who}</header>'
            f"<main>{body}</main></body></html>")


def login_page(error: str | None = None) -> str:
    msg = f'<p class="bad" role="alert">{e(error)}</p>' if error else ""
    body = (f"<h1>Log in</h1>{msg}"
            f'<form method="post" action="{PREFIX}/login" class="box">'
            '<label>API key <input type="password" name="api_key" autocomplete="off" required autofocus></label> '
            '<button type="submit">Log in</button></form>'
            '<p class="note">The key is sent once in this form and exchanged for a session cookie '
            "(HttpOnly, SameSite=Strict); it never appears in a URL.</p>")
    return layout("Log in", body)


def error_page(status: int, message: str, account: str | None = None) -> str:
    return layout(f"Error {status}", f'<h1>Error {status}</h1><p class="bad">{e(message)}</p>'
                                     f'<p><a href="{PREFIX}">Back to the dashboard</a></p>', account)


def jobs_table(jobs: Sequence[JobView]) -> str:
    if not jobs:
        return '<p class="note" id="no-jobs">No trainer jobs in this account yet.</p>'
    rows = "".join(
        f'<tr data-job="{e(j.job_id)}"><td><a href="{job_url(j.job_id)}">{e(j.job_id)}</a></td>'
        f'<td class="kind">{e(j.state)}</td><td>{e(j.base_model)}</td><td class="num">{j.lora_rank}</td>'
        f'<td class="num">{j.steps}</td><td class="num">{_num(j.last_loss)}</td><td>{e(j.create_time)}</td></tr>'
        for j in jobs)
    return ('<table id="jobs"><thead><tr><th>job</th><th>state</th><th>base model</th><th>LoRA rank</th>'
            f"<th>last step</th><th>last loss / token</th><th>created</th></tr></thead><tbody>{rows}</tbody></table>")


def models_table(models: Sequence[ModelView]) -> str:
    if not models:
        return '<p class="note" id="no-models">No models yet: promote a checkpoint to create one.</p>'
    rows = []
    for m in models:
        if m.source_job and m.source_checkpoint:
            src = (f'<a href="{explain_url(m.source_job, m.source_checkpoint)}">{e(m.source_checkpoint)}</a>'
                   f' &larr; <a href="{job_url(m.source_job)}">{e(m.source_job)}</a>')
        else:
            src = '<span class="note">no source checkpoint recorded</span>'
        rows.append(f'<tr data-model="{e(m.model_id)}"><td>{e(m.model_id)}</td><td class="kind">{e(m.kind)}</td>'
                    f'<td>{e(m.state)}</td><td class="kind">{e(m.checkpoint_type)}</td>'
                    f"<td>{e(m.model_id)} &larr; {src}</td><td>{e(m.create_time)}</td></tr>")
    return ('<table id="models"><thead><tr><th>model</th><th>kind</th><th>state</th><th>from type</th>'
            f'<th>lineage (model &larr; checkpoint &larr; job)</th><th>created</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def index_page(account: str, jobs: Sequence[JobView], models: Sequence[ModelView],
               deployments: Sequence[str], refresh_s: int | None) -> str:
    deps = ('<p class="note" id="no-deployments">None yet: the emulator does not create deployments.</p>'
            if not deployments else "<ul>" + "".join(f"<li>{e(d)}</li>" for d in deployments) + "</ul>")
    live = _refresh_note(refresh_s, "a job is starting or training")
    body = (f"<h1>Account {e(account)}</h1>{live}<h2>Trainer jobs</h2>{jobs_table(jobs)}"
            f"<h2>Models</h2>{models_table(models)}<h2>Deployments</h2>{deps}")
    return layout("Jobs", body, account, refresh_s)


def rows_table(job_id: str, rows: Sequence[RowView]) -> str:
    if not rows:
        return '<p class="note" id="no-rows">No checkpoint rows on this page.</p>'
    body = "".join(
        f'<tr data-row="{e(r.name)}"><td><a href="{explain_url(job_id, r.name)}">{e(r.name)}</a></td>'
        f'<td class="kind">{e(r.kind)}</td><td>{yes_no(r.resumable)}</td><td>{yes_no(r.promotable)}</td>'
        f'<td>{e(r.create_time)}</td><td class="num">{human_size(r.size)}</td></tr>'
        for r in rows)
    return ('<table id="rows"><thead><tr><th>name</th><th>kind</th><th>resumable</th><th>promotable</th>'
            f"<th>createTime</th><th>size</th></tr></thead><tbody>{body}</tbody></table>")


def rejected_table(job_id: str, rejected: Sequence[RejectedView]) -> str:
    if not rejected:
        return '<p class="note" id="no-rejected">No rejected directories.</p>'
    body = "".join(
        f'<tr data-rejected="{e(r.name)}"><td><a href="{explain_url(job_id, r.name)}">{e(r.name)}</a></td>'
        f'<td class="bad">{e(r.reason)}</td><td class="kind">{e(r.claimed_kind)}</td><td>{e(r.create_time)}</td></tr>'
        for r in rejected)
    return ('<table id="rejected"><thead><tr><th>directory</th><th>inspector\'s reason</th><th>writer\'s label</th>'
            f"<th>createTime</th></tr></thead><tbody>{body}</tbody></table>")


def job_page(account: str, job: JobView, rows: Sequence[RowView], *, page_token: str, next_token: str,
             page_size: int, rejected: Sequence[RejectedView], charts: Sequence[str],
             refresh_s: int | None) -> str:
    pager = []
    if page_token:
        pager.append(f'<a href="{job_url(job.job_id, pageSize=_size(page_size))}" id="first-page">First page</a>')
    if next_token:
        pager.append(f'<a href="{job_url(job.job_id, pageToken=next_token, pageSize=_size(page_size))}" '
                     'id="next-page">Next page</a>')
    deleted = '<p class="bad">This job is deleted; its rows stay listed during retention.</p>' if job.deleted else ""
    body = (f"<h1>Trainer job {e(job.job_id)}</h1>{deleted}"
            f'<div class="box" id="job-facts">state <b class="kind">{e(job.state)}</b> &middot; base model '
            f"<b>{e(job.base_model)}</b> &middot; LoRA rank {job.lora_rank} &middot; created {e(job.create_time)} "
            f"&middot; {job.steps} steps recorded</div>"
            f'{_refresh_note(refresh_s, "the job is starting or training")}'
            f'<h2>Training metrics</h2><div id="charts">{"".join(charts)}</div>'
            f"<h2>Checkpoint rows</h2>{rows_table(job.job_id, rows)}"
            f'<p class="pager">{"".join(pager)}</p>'
            f"<h2>Rejected directories</h2>{rejected_table(job.job_id, rejected)}")
    return layout(f"Job {job.job_id}", body, account, refresh_s)


def explain_page(account: str, x: ExplainView) -> str:
    verdict = (f'kind <b class="kind">{e(x.live_kind)}</b>' if x.live_kind
               else f'<b class="bad">rejected</b>: {e(x.live_reason)}')
    stored = (f'<span class="kind">{e(x.stored_kind)}</span>' if x.stored_kind
              else f'<span class="bad">rejected: {e(x.stored_reason)}</span>')
    hint = f'<p id="hint">What to do: {e(x.hint)}</p>' if x.hint else ""
    files = "".join(
        f'<tr><td><code>{e(f.name)}</code></td><td>{e(f.family)}</td><td class="num">{f.size:,}</td>'
        f'<td class="num">{f.bytes_read:,}</td></tr>' for f in x.files)
    reads = "".join(f'<tr><td><code>{e(n)}</code></td><td class="num">{o:,}</td><td class="num">{b:,}</td></tr>'
                    for n, o, b in x.reads)
    details = "".join(f"<tr><td><code>{e(k)}</code></td><td><code>{e(v)}</code></td></tr>"
                      for k, v in sorted(x.details.items()))
    inspected = ""
    if x.exists:
        inspected = (f"<h2>Files the inspector listed (lstat only)</h2>"
                     '<table id="files"><thead><tr><th>file</th><th>family</th><th>size</th><th>bytes read</th>'
                     f"</tr></thead><tbody>{files}</tbody></table>"
                     f"<h2>Reads ({len(x.reads)}, {x.bytes_read:,} bytes in all)</h2>"
                     + ('<table id="reads"><thead><tr><th>file</th><th>offset</th><th>bytes</th></tr></thead>'
                        f"<tbody>{reads}</tbody></table>" if x.reads
                        else '<p class="note">No file content was read: the file list alone decided.</p>'))
    body = (f'<h1>Explain {e(x.name)}</h1><p><a href="{job_url(x.job_id)}">&larr; job {e(x.job_id)}</a></p>'
            f'<div class="box" id="decision"><p>Decided by <code id="deciding-file">{e(x.deciding_file)}</code>: '
            f'<span id="deciding-rule">{e(x.deciding_rule)}</span></p>'
            f'<p>Inspected now: {verdict}</p>{hint}'
            f"<p>Recorded in the store: {stored} &middot; writer's label {e(x.claimed_kind) or 'none'} "
            f"&middot; created {e(x.create_time)} &middot; last judged {e(x.update_time)}</p></div>"
            f"{inspected}"
            + (f'<h2>Recorded details</h2><table id="details"><tbody>{details}</tbody></table>' if details else ""))
    return layout(f"Explain {x.name}", body, account)


def _refresh_note(refresh_s: int | None, why: str) -> str:
    if not refresh_s:
        return ""
    return f'<p class="note" id="live">Refreshing every {int(refresh_s)} s while {e(why)}.</p>'


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"


def _size(page_size: int) -> str:
    return "" if page_size == 50 else str(page_size)
