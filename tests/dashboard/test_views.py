"""views and explain: pure HTML builders escape everything, link only same-origin paths, and say why."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from fwemu.emulator.dashboard import views
from fwemu.emulator.dashboard.explain import deciding_rule, explain_dir
from fwemu.emulator.inspect import Kind, Verdict
from tests.builders import hf_dir, peft_dir

HOSTILE = '<script>alert("x")</script>'


class Collect(HTMLParser):
    """Tags, and every URL-bearing attribute, of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("href", "src", "action") and v is not None:
                self.urls.append(v)
            if k == "id":
                self.ids.append(v)


def parse(html: str) -> Collect:
    c = Collect()
    c.feed(html)
    return c


def row(name: str, kind: str | None = "CHECKPOINT_TYPE_TRAINING", resumable=True, promotable=False):
    return views.RowView(name, kind, resumable, promotable, "2026-01-01T00:00:00Z", 2048)


def job(job_id="job-1", state="JOB_STATE_RUNNING"):
    return views.JobView(job_id, state, "accounts/fireworks/models/qwen3-8b", "2026-01-01T00:00:00Z", 0, 3, 1.25)


def test_every_page_is_offline_and_scriptless():
    pages = [
        views.login_page("bad key"),
        views.index_page("acct", [job()], [], [], 5),
        views.job_page("acct", job(), [row("step-1")], page_token="", next_token="t", page_size=50,
                       rejected=[], charts=["<svg></svg>"], refresh_s=None),
        views.error_page(404, "nope", "acct"),
    ]
    for html in pages:
        c = parse(html)
        assert "script" not in c.tags and "iframe" not in c.tags and "img" not in c.tags
        for url in c.urls:
            assert url.startswith("/dashboard"), url  # same-origin paths only: no CDN, no font service


def test_hostile_names_and_reasons_are_escaped():
    html = views.job_page(
        "acct", job(HOSTILE), [row(HOSTILE)], page_token="", next_token="", page_size=50,
        rejected=[views.RejectedView(HOSTILE, f"model.safetensors: {HOSTILE}", HOSTILE, "t")], charts=[],
        refresh_s=None)
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert "script" not in parse(html).tags
    # a name with / or ? stays one path segment in the link
    link = views.explain_url("job-1", "a/b?c")
    assert link == "/dashboard/jobs/job-1/checkpoints/a%2Fb%3Fc"


def test_rows_table_shows_kind_flags_time_and_size():
    html = views.rows_table("job-1", [row("step-1"), row("step-2", "CHECKPOINT_TYPE_INFERENCE_BASE", False, True)])
    assert html.count("<tr data-row=") == 2
    assert "CHECKPOINT_TYPE_INFERENCE_BASE" in html and "2.0 KiB" in html
    step2 = html[html.index('data-row="step-2"'):]
    assert re.search(r"<td><span class=\"no\">no</span></td><td><span class=\"yes\">yes</span>", step2)


def test_pager_links_carry_the_token_but_never_a_key():
    html = views.job_page("acct", job(), [row("a")], page_token="abc", next_token="def", page_size=20,
                          rejected=[], charts=[], refresh_s=5)
    c = parse(html)
    assert "/dashboard/jobs/job-1?pageToken=def&pageSize=20" in c.urls
    assert "/dashboard/jobs/job-1?pageSize=20" in c.urls and "first-page" in c.ids
    assert '<meta http-equiv="refresh" content="5">' in html
    assert not any("key" in u.lower() for u in c.urls)
    still = views.job_page("acct", job(state="JOB_STATE_COMPLETED"), [], page_token="", next_token="",
                           page_size=50, rejected=[], charts=[], refresh_s=None)
    assert "http-equiv" not in still and "next-page" not in parse(still).ids


def test_login_form_posts_the_key_in_the_body():
    c = parse(views.login_page())
    assert c.urls == ["/dashboard/static/dashboard.css", "/dashboard/static/favicon.svg", "/dashboard",
                      "/dashboard/login"]
    html = views.login_page()
    assert 'method="post"' in html and 'type="password"' in html


def test_models_show_lineage_to_their_checkpoint_and_job():
    m = views.ModelView("my-model", "HF_BASE_MODEL", "READY", "t", "CHECKPOINT_TYPE_INFERENCE_BASE", "job-1", "s-1")
    html = views.models_table([m])
    assert "/dashboard/jobs/job-1/checkpoints/s-1" in parse(html).urls and "/dashboard/jobs/job-1" in parse(html).urls
    assert views.models_table([]).count("No models yet") == 1


def test_deciding_rule_names_the_file_of_a_rejection_and_of_each_kind():
    bad = Verdict(kind=None, reason="model.safetensors: truncated header", file="model.safetensors")
    assert deciding_rule(bad) == ("model.safetensors", "truncated header")
    for kind in Kind:
        file, rule = deciding_rule(Verdict(kind=kind))
        assert file and rule


def test_explain_dir_lists_reads_and_the_decision(tmp_path):
    good = explain_dir(hf_dir(tmp_path / "hf"))
    assert good.verdict.kind is Kind.INFERENCE_BASE and good.deciding_file == "config.json"
    read_files = {name for name, _, _ in good.reads}
    assert read_files == {"config.json", "model.safetensors"}
    by_name = {f.name: f for f in good.files}
    weights = by_name["model.safetensors"]
    assert 0 < weights.bytes_read < weights.size, "only the safetensors header is read"
    assert sum(f.bytes_read for f in good.files) == good.verdict.bytes_read

    broken = peft_dir(tmp_path / "peft")
    (broken / "adapter_config.json").write_text('{"peft_type": "IA3"}')
    bad = explain_dir(broken)
    assert bad.verdict.kind is None and bad.deciding_file == "adapter_config.json"
    assert "IA3" in bad.deciding_rule
    missing = explain_dir(tmp_path / "nowhere")
    assert not missing.exists and missing.verdict is None


def test_explain_page_shows_the_decision_and_reads():
    x = views.ExplainView(
        job_id="job-1", name="s-1", stored_kind=None, stored_reason="config.json: model_type must be x",
        claimed_kind="INFERENCE_BASE", details={"hint": HOSTILE}, create_time="t", update_time="u", exists=True,
        live_kind=None, live_reason="config.json: model_type must be x", hint="save again", deciding_file="config.json",
        deciding_rule="model_type must be x", files=[], reads=[("config.json", 0, 120)], bytes_read=120)
    html = views.explain_page("acct", x)
    ids = parse(html).ids
    assert {"decision", "deciding-file", "deciding-rule", "reads", "hint"} <= set(ids)
    assert HOSTILE not in html and "config.json" in html and "120" in html
